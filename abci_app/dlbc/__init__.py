"""The DLBC consensus state machine (DESIGN §3-§6, paper Sections IV-A, IV-B, IV-D, IV-H).

Layers: pure math and encodings (`codes`, `params`, `genesis`, `ranking`, `crypto`, `txs`) →
state on a staged `View` (`state`) → transitions `process_<msg>` dispatched by one `apply_tx`
(`process`), the round schedule (`rounds`) and settlement (`settle`) → the ABCI adapter
(`app.DlbcApplication`). Everything that reaches state is integer arithmetic over chain data:
no floats, wall clock or unordered iteration.
"""
