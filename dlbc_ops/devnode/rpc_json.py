"""CometBFT RPC JSON shapes for ABCI results, and the event query language — no I/O.

Why exact shapes: the dev node must be indistinguishable from CometBFT v0.38 to our RPC client
(docs/wire.md): uint32 as JSON numbers, int64 as decimal strings, bytes base64 (hashes upper hex),
events as {type, attributes:[{key, value, index}]}. Event routing follows CometBFT's pubsub: each
event is published with a map "type.key" -> values plus `tm.event`, `tx.hash`, `tx.height`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class _EventLike(Protocol):
    type: str

    @property
    def attributes(self) -> Sequence[Any]: ...


def b64(data: bytes) -> str | None:
    """Go's encoding/json renders an empty []byte as null; keep that."""
    return base64.b64encode(data).decode() if data else None


def event_json(ev: _EventLike) -> dict[str, Any]:
    return {
        "type": ev.type,
        "attributes": [
            {"key": a.key, "value": a.value, "index": bool(getattr(a, "index", True))}
            for a in ev.attributes
        ],
    }


def tx_result_json(res: Any) -> dict[str, Any]:
    """`ResponseCheckTx` or `ExecTxResult` protobuf → CometBFT JSON."""
    return {
        "code": int(res.code),
        "data": b64(bytes(res.data)),
        "log": res.log,
        "info": res.info,
        "gas_wanted": str(res.gas_wanted),
        "gas_used": str(res.gas_used),
        "events": [event_json(e) for e in res.events],
        "codespace": res.codespace,
    }


def flatten_events(
    events: Iterable[Mapping[str, Any]], base: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """JSON events → CometBFT's composite-key map ("transfer.sender": [...]), plus `base`."""
    out: dict[str, list[str]] = {k: list(v) for k, v in base.items()}
    for ev in events:
        for a in ev.get("attributes") or []:
            if not ev.get("type") or not a.get("key"):
                continue
            out.setdefault(f"{ev['type']}.{a['key']}", []).append(str(a.get("value", "")))
    return out


# --------------------------------------------------------------------------- queries


class QuerySyntaxError(ValueError):
    """The subscriber's query is not in the supported subset of CometBFT's query language."""


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    op: str  # "=", "<", "<=", ">", ">=", "CONTAINS", "EXISTS"
    value: str | int | None


_COND = re.compile(
    r"\s*([A-Za-z0-9_.\-]+)\s*(?:(EXISTS)|(=|<=|>=|<|>|CONTAINS)\s*('(?:[^']*)'|-?\d+))\s*"
)


@dataclass(frozen=True, slots=True)
class Query:
    """A conjunction of conditions, e.g. `tm.event='Tx' AND transfer.sender='ab12'`."""

    text: str
    conditions: tuple[Condition, ...]

    @classmethod
    def parse(cls, text: str) -> Query:
        if not text or len(text) > 512:
            raise QuerySyntaxError("query must be 1..512 characters")
        conds: list[Condition] = []
        for part in re.split(r"\s+AND\s+", text.strip()):
            m = _COND.fullmatch(part)
            if not m:
                raise QuerySyntaxError(
                    f"cannot parse condition {part!r} (supported: key='value', key=N, "
                    "key<N, key CONTAINS 'x', key EXISTS, joined by AND)"
                )
            key, exists, op, raw = m.groups()
            if exists:
                conds.append(Condition(key, "EXISTS", None))
            elif raw.startswith("'"):
                conds.append(Condition(key, op, raw[1:-1]))
            else:
                conds.append(Condition(key, op, int(raw)))
        return cls(text=text, conditions=tuple(conds))

    def matches(self, events: Mapping[str, list[str]]) -> bool:
        return all(_match(c, events.get(c.key)) for c in self.conditions)


def _match(c: Condition, values: list[str] | None) -> bool:
    if values is None:
        return False
    if c.op == "EXISTS":
        return True
    for v in values:
        if c.op == "CONTAINS":
            if isinstance(c.value, str) and c.value in v:
                return True
            continue
        if isinstance(c.value, int):
            try:
                n = int(v)
            except ValueError:
                continue
            if (
                (c.op == "=" and n == c.value)
                or (c.op == "<" and n < c.value)
                or (c.op == "<=" and n <= c.value)
                or (c.op == ">" and n > c.value)
                or (c.op == ">=" and n >= c.value)
            ):
                return True
        elif c.op == "=" and v == c.value:
            return True
    return False
