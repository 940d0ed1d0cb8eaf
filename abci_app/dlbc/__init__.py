"""The DLBC consensus state machine (docs/transactions.md, docs/rounds.md, docs/ranking.md,
docs/settlement.md; paper Sections IV-A, IV-B, IV-D, IV-H).

Layers: typed data (`records`: tasks, rounds, reveals, verdicts, winners, `Phase`, the integer
NewTypes; `messages`: one frozen dataclass per tx message; `events`, `codes`, `params`) and pure
math (`ranking` Eq. 1-4, `rewards` Eq. 5-6) → the protobuf edge (`txs` decodes txs into
`messages`, `extensions` vote extensions, `wire` canonical parsing, `crypto` signatures) →
state on a staged `View` (`state`, reading and writing `records`) → transitions `process_<msg>`
dispatched by one `apply_tx` (`process`), the round schedule (`rounds`), settlement (`settle`)
and the economics (`economics`) → the ABCI adapter (`app.DlbcApplication`, the only module
here that sees ABCI protobufs). Nothing here imports asyncio, sockets or torch. Everything
that reaches state is integer arithmetic over chain data: no floats, wall clock or unordered
iteration.
"""
