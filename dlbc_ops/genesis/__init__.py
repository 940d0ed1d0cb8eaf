"""The genesis builder: a CometBFT genesis.json that a DLBC chain can start from.

One module per job: `consensus` (vote extensions and block size per CometBFT release line),
`validators` (entries from key files, their checks), `app_state` (DLBC's half: the state
machine's defaults + balances + parameter overrides), `document` (the whole file: create, merge,
validate, read, write). The `dlbc genesis` command is `dlbc_ops.cli.genesis`.

The names below are the package's API (`from dlbc_ops import genesis as gen`).
"""

from dlbc_ops.cometbft import FORM_V038, FORM_V1, FORMS
from dlbc_ops.genesis.app_state import (
    build_app_state,
    check_app_state,
    parse_account,
    parse_param,
)
from dlbc_ops.genesis.consensus import (
    VOTE_EXTENSIONS_HEIGHT,
    check_form,
    check_settle_fits,
    default_consensus_params,
    enable_vote_extensions,
    infer_form,
    vote_extensions_height,
)
from dlbc_ops.genesis.document import (
    MAX_CHAIN_ID_LEN,
    apply_dlbc,
    dumps_genesis,
    load_genesis,
    new_genesis,
    validate_genesis,
    write_text_atomic,
)
from dlbc_ops.genesis.errors import GenesisError
from dlbc_ops.genesis.validators import (
    DEFAULT_VALIDATOR_POWER,
    PUB_KEY_TYPE_ED25519,
    check_validators,
    validator_entry,
    validator_from_key_file,
)

__all__ = [
    "DEFAULT_VALIDATOR_POWER",
    "FORMS",
    "FORM_V038",
    "FORM_V1",
    "MAX_CHAIN_ID_LEN",
    "PUB_KEY_TYPE_ED25519",
    "VOTE_EXTENSIONS_HEIGHT",
    "GenesisError",
    "apply_dlbc",
    "build_app_state",
    "check_app_state",
    "check_form",
    "check_settle_fits",
    "check_validators",
    "default_consensus_params",
    "dumps_genesis",
    "enable_vote_extensions",
    "infer_form",
    "load_genesis",
    "new_genesis",
    "parse_account",
    "parse_param",
    "validate_genesis",
    "validator_entry",
    "validator_from_key_file",
    "vote_extensions_height",
    "write_text_atomic",
]
