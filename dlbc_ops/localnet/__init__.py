"""`dlbc localnet`: a multi-validator DLBC chain on one machine with real CometBFT binaries.

Modules: `plan` (pure config/genesis generation over a `cometbft testnet` folder), `tomlpatch`
(line-level config.toml edits), `ports` (port-in-use checks), `runner` (process supervision),
`cli` (the subcommand). See cometbft/README.md for the operator's view.
"""
