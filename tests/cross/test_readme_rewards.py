"""The README's worked reward split (section "The reward split, worked") is what the chain pays.

Its numbers are computed here by the real `abci_app.dlbc.rewards` at the real default `Params`,
and the devnet's `paid:` line it quotes is the one `dlbc_ops.devnet.narration` prints for them:
change the economics or the narration and the README must follow.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from abci_app.dlbc.params import PPM, Params
from abci_app.dlbc.rewards import compute_publisher_share_ppm, split_block_reward
from dlbc_ops.devnet.history import History
from dlbc_ops.devnet.narration import Narrator
from tests.support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| (\d+)( or more)? \| ([\d.]+) % \| ([\d,]+) \| ([\d,]+) \+ ([\d,]+) \|$",
                 re.MULTILINE)


def _section() -> str:
    start = README.index("### The reward split, worked")
    return README[start:README.index("\n## ", start)]


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _payout(queue_len: int) -> tuple[int, int, int]:
    """(publisher share ppm, publisher amount, miner amount) at the default params."""
    p = Params()
    share = compute_publisher_share_ppm(p.k_ppm, queue_len, p.max_queue_len)
    publisher, miner = split_block_reward(p.block_reward, share)
    return share, publisher, miner


def test_readme_reward_table_is_what_rewards_py_computes() -> None:
    rows = ROW.findall(_section())
    assert len(rows) >= 4, "the worked example's table is missing or changed shape"
    for queued, or_more, percent, publisher, task_reward, miner in rows:
        # a row "100 or more" must hold at 100 and beyond
        for l in ((int(queued), int(queued) * 3) if or_more else (int(queued),)):
            share, pub_amount, miner_amount = _payout(l)
            assert float(percent) == pytest.approx(share / PPM * 100), f"l={l}"
            assert (_int(publisher), _int(miner)) == (pub_amount, miner_amount), f"l={l}"
        assert _int(task_reward) == Params().min_task_reward  # the demo's reward


def test_readme_states_the_default_params_it_computes_with() -> None:
    p, text = Params(), " ".join(_section().split())
    assert f"`block_reward` = {p.block_reward:,}" in text
    assert f"`L` = `max_queue_len` = {p.max_queue_len}" in text
    assert f"`k` = `k_ppm` / 10^6 = {p.k_ppm // PPM}" in text and p.k_ppm % PPM == 0


def test_readme_paid_line_is_what_the_devnet_prints(tmp_path: Path) -> None:
    """The tour's `paid:` line: round 1 of a devnet, one task queued, the demo's reward."""
    share, to_publisher, to_miner = _payout(1)
    miner, publisher = "ba" * 20, "cd" * 20
    out = io.StringIO()
    narrator = Narrator(out, History(tmp_path / "history.json"))
    narrator.names.update({miner: "miner-1", publisher: "publisher"})
    line = narrator.payout({
        "round": 1, "queue_len": 1, "publisher_share_ppm": share, "publisher": publisher,
        "winner": {"miner": miner, "task_reward": Params().min_task_reward,
                   "block_reward_miner": to_miner, "block_reward_publisher": to_publisher}})
    assert f"] round 1: {line}\n" in README
