"""The embedded development node: a DEVELOPMENT STAND-IN for CometBFT (single validator, no p2p).

It drives the app over the real ABCI socket through `dlbc_ops.devnode.driver`, keeps a mempool, produces a
block every `--block-time` seconds with BFT time = wall clock of the proposal, and serves the
subset of CometBFT's RPC that our clients use, so the same client code runs against a real node
(docs/processes.md, docs/wire.md). It is not a consensus engine: no p2p, no BFT rounds, one
validator.
"""
