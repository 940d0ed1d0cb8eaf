"""`dlbc localnet`: a multi-validator DLBC chain on one machine with real CometBFT binaries.

Modules, one job each: `layout` (ports per node, folders, the testnet layout check), `nodeconfig`
(each node's config.toml edits), `tomlpatch` (line-level TOML edits), `plan` (genesis for every
node + the manifest, pure over a `cometbft testnet` folder), `home` (make or resume --home),
`ports` (port-in-use checks), `runner` (start apps, nodes, verifiers, sidecars, the demo),
`follow` (watch heights until stopped), `demo` (the --demo plan). The command is
`dlbc_ops.cli.localnet`; the binary and its version are `dlbc_ops.cometbft`. See
cometbft/README.md for the operator's view.
"""
