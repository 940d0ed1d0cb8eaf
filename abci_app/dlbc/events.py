"""Events the state machine emits (h11 style: frozen data, no I/O).

The app adapter turns each into an ABCI `Event`, which CometBFT indexes: clients subscribe with
e.g. `tm.event='Tx' AND dlbc.round='3'` or `tm.event='NewBlock'` for round/phase changes.
Attribute keys used: action, sender, to, miner, validator, task_id, round, phase, outcome
(lookup keys: `INDEXED_KEYS`) and amount, fee, seed, score_ppm, start_ns, release_ns (values).

Only lookup keys are marked `index=True`: CometBFT's kv indexer writes one entry per indexed
attribute of every tx, and nobody searches txs by an amount or a fee (bench/cometbft_throughput.py
on the development machine, two runs: about 340 us of node CPU per committed Transfer with its
five attributes indexed, about 270 with one). Values stay in every tx result (`block_results`,
`tx`) and in the websocket stream, whose subscriptions match every attribute, indexed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Attribute keys `tx_search` / `block_search` can find (see the module docstring).
INDEXED_KEYS = frozenset({"action", "sender", "to", "miner", "validator", "task_id", "round",
                          "phase", "outcome"})


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    attributes: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, type_: str, **attrs: object) -> Event:
        return cls(type_, tuple((k, str(v)) for k, v in attrs.items()))
