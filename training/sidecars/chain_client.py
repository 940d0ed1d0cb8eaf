"""`ChainClient`: the only place that knows the app's query paths and how to send a DLBC tx.

Queries are the JSON answers of abci_app/dlbc/query.py. Sending signs with the account's nonce,
read from `accounts/<addr>` for every tx, and waits for the block (`broadcast_tx_commit`), so
the next tx of the same process sees the nonce the previous one consumed.

Why a nonce mismatch is retried (issue 13): two processes that send from one key (a publisher
and a `dlbc transfer`, say) read the same committed nonce, and the second tx is refused with
BAD_NONCE (abci_app/dlbc/codes.py) because the app's CheckTx view already counts the first.
The refusal names the nonce the app expects, so the tx is signed again with it (or with a
freshly read one) a bounded number of times; only then does the caller see `TxRejected`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from abci_app.dlbc.codes import Code
from abci_app.dlbc.records import RoundInfo, Task, is_idle_answer
from abci_app.keyfile import KeyPair
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import CommitResult, QueryError
from training.sidecars.scheme import WatermarkScheme

if TYPE_CHECKING:
    from training.sidecars.rpc_types import TxResult

log = logging.getLogger("dlbc.chain")

#: Signing attempts of one tx when the app answers BAD_NONCE (another sender of the same key).
NONCE_ATTEMPTS = 5
#: "nonce 4 but account <hex> expects 5" (abci_app/dlbc/process.py apply_decoded).
_EXPECTS_RE = re.compile(r"expects (\d+)")


class TxRejected(RuntimeError):
    """The node refused one of our txs; `code`/`log` are the app's own (abci_app/dlbc/codes.py)."""

    def __init__(self, what: str, code: int, log: str) -> None:
        self.what = what
        self.code = code
        self.log = log
        super().__init__(f"{what} rejected with code {code} ({_code_name(code)}): {log}")


def _code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return "not an app code"


def address_hex(addr: bytes) -> str:
    return addr.hex()


def expected_nonce(log_text: str) -> int | None:
    """The nonce a BAD_NONCE refusal says the app expects, None when the log does not say."""
    m = _EXPECTS_RE.search(log_text)
    return int(m.group(1)) if m else None


class ChainClient:
    """The sidecars' view of the chain: DLBC query paths and signed-tx sending."""

    def __init__(self, rpc: RpcClient, key: KeyPair | None = None,
                 *, nonce_attempts: int = NONCE_ATTEMPTS) -> None:
        self.rpc = rpc
        self.key = key
        self.nonce_attempts = nonce_attempts
        self.nonce_retries = 0
        """How many times a tx was signed again after BAD_NONCE (metrics, tests)."""
        self._chain_id: str | None = None

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    # -- queries (JSON answers of abci_app/dlbc/query.py)

    def query(self, path: str) -> Any:
        return self.rpc.query_json(path)

    def query_optional(self, path: str) -> Any:
        """Like `query`, but a not-found answer (non-zero code) is None instead of an error."""
        try:
            return self.rpc.query_json(path)
        except QueryError:
            return None

    def current_round(self) -> RoundInfo | None:
        """The newest round (active, ANNOUNCED included, or the last closed one), None before
        the first round started."""
        doc = _unwrap(self.query_optional("round"), "round")
        if doc is None or is_idle_answer(doc):
            return None
        return RoundInfo.from_json(doc)

    def active_rounds(self) -> list[RoundInfo]:
        """Every active round, oldest first (`rounds/active`): with pipelined rounds one trains
        while the one before it reveals or verifies and the next may be ANNOUNCED, so a sidecar
        that read only the newest round would miss the work of the older one."""
        doc = self.query("rounds/active")
        rounds = doc.get("rounds", []) if isinstance(doc, dict) else []
        infos = [RoundInfo.from_json(r) for r in rounds if isinstance(r, dict)]
        return sorted(infos, key=lambda i: i.record.round)

    def round_record(self, n: int) -> RoundInfo | None:
        doc = _unwrap(self.query_optional(f"rounds/{n}"), "round")
        return None if doc is None else RoundInfo.from_json(doc)

    def task(self, task_id: int) -> Task | None:
        doc = _unwrap(self.query_optional(f"tasks/{task_id}"), "task")
        return None if doc is None else Task.from_json(doc)

    def account(self, addr: bytes) -> dict[str, Any]:
        doc = self.query_optional(f"accounts/{addr.hex()}")
        if not isinstance(doc, dict):
            return {"address": addr.hex(), "balance": 0, "nonce": 0}
        return doc

    def params(self) -> dict[str, Any]:
        return _unwrap(self.query("params"), "params") or {}

    def watermark_scheme(self) -> WatermarkScheme:
        """The chain's watermark rules; `WatermarkParamsError` if the node does not state them."""
        return WatermarkScheme.from_params(self.params())

    # -- transactions

    def send(self, msg: Message, what: str | None = None) -> CommitResult:
        """Sign `msg` with the account's nonce and wait for its block; raises `TxRejected`.

        broadcast_tx_commit rather than _sync: a sidecar sends a handful of txs per round and the
        next one needs the nonce the previous one consumed, which only the committed state shows.
        A BAD_NONCE refusal (someone else sent from this key meanwhile) is signed again with the
        nonce the app expects, up to `nonce_attempts` times in all (module docstring).
        """
        from abci_app.dlbc.txs import build_signed_tx

        if self.key is None:
            raise RuntimeError("this sidecar has no key to sign with")
        what = what or type(msg).__name__
        nonce = int(self.account(self.key.address).get("nonce", 0))
        attempt = 1
        while True:
            tx = build_signed_tx(self.key.private_key, self.chain_id, nonce, msg)
            res = self.rpc.broadcast_tx_commit(tx)
            refused = _refusal(res)
            if refused is None:
                return res
            if refused.code != Code.BAD_NONCE or attempt >= self.nonce_attempts:
                raise TxRejected(what, refused.code, refused.log)
            hint = expected_nonce(refused.log)
            fresh = int(self.account(self.key.address).get("nonce", 0))
            # The hint comes from the app's CheckTx view (it counts txs still in the mempool);
            # the committed nonce catches up with it one block later.
            nonce = max(fresh, hint if hint is not None else fresh)
            if hint is None or hint <= fresh:
                time.sleep(0.2 * attempt)  # let the other sender's block commit
            attempt += 1
            self.nonce_retries += 1
            log.info("%s: nonce clash with another sender of %s (%s); signing again with "
                     "nonce %d (attempt %d/%d)", what, self.key.address.hex(), refused.log,
                     nonce, attempt, self.nonce_attempts)


def _refusal(res: CommitResult) -> TxResult | None:
    """CheckTx's or FinalizeBlock's refusal of a broadcast tx, None when it was accepted."""
    if not res.check_tx.ok:
        return res.check_tx
    if not res.tx_result.ok:
        return res.tx_result
    return None


def _unwrap(doc: object, wrapper: str) -> dict[str, Any] | None:
    """A query answer as a JSON object, accepting both `{...}` and `{"<wrapper>": {...}}`."""
    if not isinstance(doc, dict):
        return None
    inner = doc.get(wrapper)
    if isinstance(inner, dict):
        return inner
    return doc
