"""The genesis builder's one error type and the integer spelling CometBFT's JSON uses."""

from __future__ import annotations

import re
from typing import Any, TypeGuard

_INT = re.compile(r"^-?[0-9]+$")


class GenesisError(ValueError):
    """The genesis (or an argument building it) is invalid; the message says what and how to fix."""


def is_int_text(value: Any) -> TypeGuard[str | int]:
    """A JSON int64 as CometBFT writes it (a string of digits) or a plain int; never a bool."""
    return not isinstance(value, bool) and isinstance(value, str | int) and bool(
        _INT.match(str(value))
    )
