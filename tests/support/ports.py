"""Free ports for tests that start real processes, from the project's one port check.

Each kind of port block starts on its own range and stride so that suites running at the same
time on one machine rarely race for the same block (a busy port still fails loudly: the
launchers check before they start anything).
"""

from __future__ import annotations

import random

from dlbc_ops.localnet.ports import free_base_port
from dlbc_ops.ports import free_base, free_port

__all__ = ["cometbft_base", "devnet_base", "free_port", "localnet_base"]


def localnet_base(validators: int) -> int:
    """A `dlbc localnet --base-port` for the CLI tests (the fake cometbft)."""
    return free_base_port(validators, start=32000, step=131)


def cometbft_base(validators: int, extra: int = 0) -> int:
    """A `--base-port` for the real-CometBFT tests: the nodes' block plus `extra` ports."""
    return free_base_port(validators, extra=extra, start=33000, step=211)


def devnet_base() -> int:
    """`dlbc devnet --base-port`: RPC, app, publisher and two miners' artifact ports free."""
    return free_base(lambda b: (b, b + 1, b + 10, b + 11, b + 12),
                     start=random.randrange(30000, 31000), stop=60000, step=101)
