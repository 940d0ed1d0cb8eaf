"""`dlbc devnet`: a whole DLBC chain on this machine with the embedded dev node.

One module per job: `config` (settings, ports, preflight checks), `sidecars` (publisher, miners,
verifier on threads), `narration` (the printed story), `history` (OUT/history.json), `plots`
(the PNGs), `devnet` (the `Devnet` orchestrator). The command itself is `dlbc_ops.cli.devnet`.
"""
