"""Deterministic decoding of user bytes: protobuf messages and JSON values (docs/determinism.md).

Why this module: validity must not depend on the interpreter. Two traps were real on this chain:

* `json.loads` recurses in C with the interpreter's recursion guard, so how deep a value may be
  nested depends on the Python version and on how deep the caller's stack already is: a
  hyperparams value that CheckTx accepted failed one frame deeper in FinalizeBlock and halted
  every node. `parse_json_object` first bounds the structure with a flat scan (no recursion),
  then parses with hooks that never build floats or huge integers (whose parsing is capped by
  the environment variable PYTHONINTMAXSTRDIGITS, i.e. by the operator, not by the protocol).
* protobuf keeps unknown fields and accepts any field order and repeated scalars: a message can
  be padded, or encoded several ways. `parse_canonical` accepts only the one canonical encoding
  of a message that has no unknown field anywhere, so the bytes of a tx, of a Settle and of a
  vote extension say exactly what their fields say, and nothing else rides along.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

M = TypeVar("M", bound=Message)

#: Deepest nesting of arrays/objects a user JSON value may have.
MAX_JSON_DEPTH = 8
#: Most values (scalars, arrays, objects, keys) a user JSON value may hold.
MAX_JSON_VALUES = 1024
#: Longest integer literal: hyperparameters are small numbers, not bignums.
MAX_JSON_INT_DIGITS = 19


class WireError(ValueError):
    """The bytes or text are not an acceptable encoding; the message says why."""


# ----------------------------------------------------------------------------------- protobuf


def parse_canonical(cls: type[M], data: bytes) -> M:
    """Decode `data` as `cls`, accepting only its canonical encoding with no unknown fields."""
    try:
        msg: M = cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise WireError(f"does not decode as {cls.DESCRIPTOR.full_name}: {exc}") from None
    if _has_unknown_fields(msg):
        raise WireError(f"{cls.DESCRIPTOR.full_name} carries unknown fields")
    if msg.SerializeToString(deterministic=True) != data:
        raise WireError(f"{cls.DESCRIPTOR.full_name} is not canonically encoded")
    return msg


def _submessages(msg: Message) -> Iterator[Message]:
    for field, value in msg.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue  # no map fields in our schemas; never recurse into one blindly
            yield from value
        else:
            yield value


def _has_unknown_fields(root: Message) -> bool:
    """Iterative walk (our schemas are a few levels deep; no recursion on user-controlled
    depth: an unknown nested group is itself an unknown field of its parent)."""
    stack = [root]
    while stack:
        msg = stack.pop()
        if len(unknown_fields.UnknownFieldSet(msg)):
            return True
        stack.extend(_submessages(msg))
    return False


# --------------------------------------------------------------------------------------- JSON


def check_json_shape(text: str, *, max_depth: int = MAX_JSON_DEPTH,
                     max_values: int = MAX_JSON_VALUES) -> None:
    """Bound nesting depth and value count of a JSON text with a flat scan (no recursion).

    Counts structure outside strings only; it does not validate the JSON (the parser does,
    once the shape is known to be small)."""
    depth = values = 0
    in_string = escaped = False
    prev_value_char = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
            values += 1
        elif ch in "[{":
            depth += 1
            values += 1
            if depth > max_depth:
                raise WireError(f"JSON nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1
        elif ch in "-0123456789tfn" and not prev_value_char:
            values += 1
        prev_value_char = ch.isalnum() or ch in "+-."
        if values > max_values:
            raise WireError(f"JSON holds more than {max_values} values")


def _int_parser(max_digits: int) -> Callable[[str], int]:
    """`int()` for JSON numbers, refusing long ones before Python parses them (Python's own
    limit, PYTHONINTMAXSTRDIGITS, is an environment setting, not a protocol rule)."""
    def parse(text: str) -> int:
        if len(text.lstrip("-")) > max_digits:
            raise WireError(f"JSON integer longer than {max_digits} digits")
        return int(text)
    return parse


def _no_constant(name: str) -> Any:
    raise WireError(f"JSON constant {name} is not allowed")


def parse_json_object(text: str, *, max_depth: int = MAX_JSON_DEPTH,
                      max_values: int = MAX_JSON_VALUES,
                      max_int_digits: int = MAX_JSON_INT_DIGITS) -> dict[str, Any]:
    """A bounded JSON object from untrusted text, or WireError. Floats stay strings (never
    parsed), NaN/Infinity are refused, integers are bounded: the answer is the same on every
    platform. The defaults fit one tx's fields; genesis passes its own bounds."""
    check_json_shape(text, max_depth=max_depth, max_values=max_values)
    try:
        value = json.loads(text, parse_int=_int_parser(max_int_digits), parse_float=str,
                           parse_constant=_no_constant)
    except WireError:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError: unreachable after the scan
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WireError("must be a JSON object")
    return value
