"""Result codes of every DLBC rejection, in one place (STYLE: kvstore's code.go).

Each rejection has its own code and a readable log (issue 3, "Bad input"). Code 0 is success.
The codes are part of the public contract: clients (miner, publisher CLIs) may branch on them.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    # decoding / envelope
    MALFORMED_TX = 1
    TX_TOO_LARGE = 2
    BAD_PUBLIC_KEY = 3
    BAD_SIGNATURE = 4
    WRONG_CHAIN_ID = 5
    BAD_NONCE = 6
    EMPTY_MSG = 7
    SETTLE_NOT_ALLOWED = 8  # Settle via mempool or not first in block
    SIGNED_SETTLE = 9
    # accounts
    INSUFFICIENT_FUNDS = 10
    BAD_ADDRESS = 11
    BAD_AMOUNT = 12
    INSUFFICIENT_FEE = 13  # the sender cannot pay tx_base_fee + tx_fee_per_byte * tx bytes
    # miners
    BAD_MINER_RESOURCES = 20
    NOT_REGISTERED_MINER = 21
    # tasks
    BAD_TASK_SPEC = 30
    REWARD_TOO_SMALL = 31
    POOL_FULL = 32
    UNKNOWN_TASK = 33
    NOT_TASK_PUBLISHER = 34
    TASK_NOT_SELECTED = 35
    KEY_MISMATCH = 36
    KEY_ALREADY_RELEASED = 37
    TEST_KEY_MISMATCH = 38
    TEST_KEY_ALREADY_REVEALED = 39
    # round schedule
    NO_ACTIVE_ROUND = 40
    WRONG_ROUND = 41
    WRONG_PHASE = 42
    # commit / reveal
    BAD_COMMITMENT = 50
    DUPLICATE_COMMIT = 51
    NO_COMMITMENT = 52
    REVEAL_MISMATCH = 53
    DUPLICATE_REVEAL = 54
    BAD_REVEAL = 55
    DUPLICATE_MODEL = 56
    # settlement
    BAD_SETTLE = 60
    SETTLE_BAD_SIGNATURE = 61
    SETTLE_UNKNOWN_VALIDATOR = 62
    SETTLE_INSUFFICIENT_POWER = 63
    SETTLE_DUPLICATE_VOTE = 64
    ALREADY_SETTLED = 65
    # tasks (continued)
    UNKNOWN_ARCHITECTURE = 70  # well-formed name, but not in params.ARCHITECTURES
    PUBLISHER_CAP = 71  # the publisher already has max_pending_per_publisher pending tasks
    # query
    QUERY_NOT_FOUND = 80
    QUERY_BAD_PATH = 81


class InvalidTx(Exception):
    """A tx is rejected; `code` goes to ExecTxResult/ResponseCheckTx.code and `log` to .log.

    Raised by validation and process functions before any write to the view they were given is
    kept: callers always run a tx on a child view and drop it on error (STYLE §2).
    """

    def __init__(self, code: Code, log: str) -> None:
        super().__init__(f"{code.name}: {log}")
        self.code = code
        self.log = log
