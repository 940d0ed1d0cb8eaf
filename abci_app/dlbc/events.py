"""Events the state machine emits (h11 style: frozen data, no I/O).

The app adapter turns each into an ABCI `Event`, which CometBFT indexes: clients subscribe with
e.g. `tm.event='Tx' AND dlbc.round='3'` or `tm.event='NewBlock'` for round/phase changes.
Attribute keys used: action, sender, task_id, round, miner, phase, amount, outcome.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    attributes: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, type_: str, **attrs: object) -> Event:
        return cls(type_, tuple((k, str(v)) for k, v in attrs.items()))
