"""The CometBFT half of genesis that DLBC cares about: consensus params per release line.

Why: a DLBC chain only settles rounds when vote extensions are on (docs/wire.md,
docs/settlement.md), and the key for that moved between CometBFT versions:

    v0.38: consensus_params.abci.vote_extensions_enable_height    = "1"   (string int)
    v1.0 : consensus_params.feature.vote_extensions_enable_height = "1"

A block must also be able to hold the largest honest Settle (`check_settle_fits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlbc_ops.cometbft import FORM_V038, FORM_V1, FORMS
from dlbc_ops.genesis.errors import GenesisError, is_int_text

VOTE_EXTENSIONS_HEIGHT = 1

_VE_SECTION = {FORM_V038: "abci", FORM_V1: "feature"}


def check_form(form: str) -> None:
    if form not in FORMS:
        raise GenesisError(f"unknown CometBFT version form {form!r}; use one of {', '.join(FORMS)}")


def infer_form(genesis: Mapping[str, Any]) -> str | None:
    """Guess the CometBFT line that wrote `genesis` from its consensus params (None: no clue).

    `cometbft init` v1.0 writes `feature` (and `synchrony`); v0.38 writes `abci`.
    """
    params = genesis.get("consensus_params")
    if not isinstance(params, Mapping):
        return None
    if "feature" in params or "synchrony" in params:
        return FORM_V1
    if "abci" in params:
        return FORM_V038
    return None


def default_consensus_params(form: str) -> dict[str, Any]:
    """CometBFT's default consensus params for `form`, vote extensions on from height 1.

    Values are those `cometbft init` writes (types.DefaultConsensusParams); int64s are JSON
    strings as in every CometBFT genesis.
    """
    check_form(form)
    params: dict[str, Any] = {
        "block": {"max_bytes": "22020096", "max_gas": "-1"},
        "evidence": {
            "max_age_num_blocks": "100000",
            "max_age_duration": "172800000000000",
            "max_bytes": "1048576",
        },
        "validator": {"pub_key_types": ["ed25519"]},
        "version": {"app": "0"},
    }
    if form == FORM_V1:
        params["block"]["max_bytes"] = "4194304"
        params["synchrony"] = {"precision": "505000000", "message_delay": "15000000000"}
        params["feature"] = {"vote_extensions_enable_height": "0", "pbts_enable_height": "0"}
    else:
        params["abci"] = {"vote_extensions_enable_height": "0"}
    enable_vote_extensions(params, form)
    return params


def enable_vote_extensions(
    consensus_params: dict[str, Any], form: str, height: int = VOTE_EXTENSIONS_HEIGHT
) -> None:
    """Set the vote-extension switch of `form` in place and drop the other version's key.

    Why drop it: a v1.0 node given both `abci` and `feature` heights, or a v0.38 node given an
    unknown `feature` object, is at best confusing; each version reads exactly one.
    """
    check_form(form)
    if height < 1:
        raise GenesisError(f"vote extensions must be enabled from a height >= 1, got {height}")
    section = _VE_SECTION[form]
    other = _VE_SECTION[FORM_V1 if form == FORM_V038 else FORM_V038]
    current = consensus_params.get(section)
    if not isinstance(current, dict):
        current = {}
    current["vote_extensions_enable_height"] = str(height)
    if form == FORM_V1:
        current.setdefault("pbts_enable_height", "0")
    consensus_params[section] = current
    old = consensus_params.get(other)
    if isinstance(old, dict):
        old.pop("vote_extensions_enable_height", None)
        # `abci` has no other field in v0.38/v1.0; an emptied `feature` is meaningless to v0.38.
        if not old or other == "feature":
            consensus_params.pop(other)


def vote_extensions_height(consensus_params: Mapping[str, Any], form: str) -> int:
    """The enable height written for `form`, or 0 when absent (= disabled in CometBFT)."""
    section = consensus_params.get(_VE_SECTION[form])
    if not isinstance(section, Mapping):
        return 0
    value = section.get("vote_extensions_enable_height", "0")
    if not is_int_text(value):
        raise GenesisError(
            f"consensus_params.{_VE_SECTION[form]}.vote_extensions_enable_height must be a "
            f'string integer such as "1", got {value!r}'
        )
    return int(value)


def require_vote_extensions(consensus_params: Mapping[str, Any], form: str) -> None:
    """DLBC settles rounds through vote extensions: refuse a genesis that leaves them off."""
    if vote_extensions_height(consensus_params, form) < 1:
        raise GenesisError(
            f"vote extensions are disabled (consensus_params.{_VE_SECTION[form]}."
            "vote_extensions_enable_height is 0 or missing) but DLBC settles rounds through them; "
            "fix: run `dlbc genesis --genesis FILE` to enable them from height 1"
        )


def check_settle_fits(consensus_params: Mapping[str, Any], app_state: Mapping[str, Any],
                      validators: Any) -> None:
    """The largest honest Settle (every validator's fullest extension, settle.max_settle_bytes)
    plus one full tx must fit a block, and the validator set its bound; else a round could
    never settle."""
    from abci_app.dlbc.params import Params
    from abci_app.dlbc.settle import MAX_VALIDATORS, max_settle_bytes

    if isinstance(validators, list) and len(validators) > MAX_VALIDATORS:
        raise GenesisError(f"genesis has {len(validators)} validators; DLBC settles rounds with "
                           f"at most {MAX_VALIDATORS}")
    params = Params.from_json(app_state.get("params"))
    block = consensus_params.get("block")
    raw = block.get("max_bytes") if isinstance(block, Mapping) else None
    if raw is None or not is_int_text(raw) or int(raw) == -1:
        return  # -1: CometBFT's 100 MiB hard cap
    need = max_settle_bytes(params) + params.max_tx_bytes
    if int(raw) < need:
        raise GenesisError(
            f"consensus_params.block.max_bytes {raw} cannot hold the largest Settle with a tx "
            f"({need} bytes: {MAX_VALIDATORS} validators x {params.max_reveals_per_round} "
            "verdicts); fix: raise block.max_bytes or lower params.max_reveals_per_round")
