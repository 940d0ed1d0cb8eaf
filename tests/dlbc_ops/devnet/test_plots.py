"""The devnet's plots (dlbc_ops/devnet/plots.py): what is drawn, checked on matplotlib's artists.

The history is shaped like a real devnet's: 3 miners, 6 rounds, scores in 0.975-0.996,
confidences in 0.9999-1.0, round 4 without any result and miner-3 never verified.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from dlbc_ops.devnet.plots import (
    WATERMARK_THRESHOLD,
    dice_figure,
    watermark_figure,
    write_plots,
    zoomed_limits,
)

MINERS = ("miner-1", "miner-2", "miner-3")
CLAIMS = {1: (994_100, 989_000, 975_300), 2: (995_200, 990_400, 978_800),
          3: (995_800, 992_100, 981_000), 5: (996_000, 993_500, 983_400),
          6: (995_900, 994_200, 984_900)}
CONFIDENCE = {1: (1.0, 0.99995, 0.99991), 2: (1.0, 0.99998, 0.99993), 3: (1.0, 1.0, 0.99996),
              5: (1.0, 0.99999, 0.99997), 6: (1.0, 1.0, 0.99998)}


def devnet_history() -> list[dict[str, Any]]:
    rows = []
    for rnd, claims in CLAIMS.items():
        for i, m in enumerate(MINERS):
            row: dict[str, Any] = {"round": rnd, "miner": m, "epochs": 10 + rnd,
                                   "watermark_confidence": CONFIDENCE[rnd][i],
                                   "claimed_ppm": claims[i], "winner": i == 0}
            if i < 2:  # miner-3's models got no verdict in time
                row["measured_ppm"] = claims[i] - 300 * (i + 1)
                row["verifier_confidence"] = CONFIDENCE[rnd][i] - 0.00001 * i
            rows.append(row)
    return rows


def _lines(fig: Any) -> dict[str, Any]:
    """The labelled data lines of all the figure's axes, by label."""
    return {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines()
            if not ln.get_label().startswith("_")}


def _finite(values: Any) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


def test_dice_figure_draws_one_visible_line_per_series() -> None:
    lines = _lines(dice_figure(devnet_history()))
    series = {f"{m} claimed" for m in MINERS} | {"miner-1 verified", "miner-2 verified"}
    assert set(lines) == series | {"round winner"}  # miner-3 verified: nothing to draw
    for label in series:
        assert lines[label].get_visible() and len(_finite(lines[label].get_ydata())) == 5


def test_dice_figure_zooms_to_the_data() -> None:
    fig = dice_figure(devnet_history())
    lo, hi = fig.axes[0].get_ylim()
    data = [v for ln in _lines(fig).values() for v in _finite(ln.get_ydata())]
    assert lo < min(data) and max(data) < hi  # every point in view
    assert hi - lo < 0.05 and lo > 0.9  # not the 0-1 axis that collapsed every series


def test_dice_figure_leaves_a_gap_for_a_round_without_results() -> None:
    fig = dice_figure(devnet_history())
    for label, ln in _lines(fig).items():
        if label == "round winner":
            continue
        xs, ys = list(ln.get_xdata()), list(ln.get_ydata())
        in_round_4 = [y for x, y in zip(xs, ys, strict=True) if round(x) == 4]
        assert len(in_round_4) == 1 and math.isnan(in_round_4[0]), label  # breaks the line
    assert any("without results" in p.get_label() for p in fig.axes[0].patches)


def test_dice_figure_tells_claimed_from_verified() -> None:
    lines = _lines(dice_figure(devnet_history()))
    claimed, verified = lines["miner-1 claimed"], lines["miner-1 verified"]
    assert claimed.get_markerfacecolor() == "none"  # hollow
    assert verified.get_markerfacecolor() != "none"  # filled
    assert claimed.get_linestyle() != verified.get_linestyle()
    # side by side, never on top of each other, even when the values are equal
    assert all(c < v for c, v in zip(claimed.get_xdata(), verified.get_xdata(), strict=True))


def test_dice_figure_stars_and_names_each_winner() -> None:
    fig = dice_figure(devnet_history())
    star = _lines(fig)["round winner"]
    assert star.get_marker() == "*"
    assert [round(x) for x in star.get_xdata()] == [1, 2, 3, 5, 6]
    verified = {round(x): y for x, y in zip(*_lines(fig)["miner-1 verified"].get_data(),
                                           strict=True)}
    assert [float(y) for y in star.get_ydata()] == [verified[r] for r in (1, 2, 3, 5, 6)]
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert "miner-1\n0.9938" in notes and len(notes) == 5


def test_watermark_figure_gives_each_miner_its_own_panel() -> None:
    """All at 1.0 on a healthy chain: in one axes the lines would hide each other."""
    fig = watermark_figure(devnet_history())
    assert [ax.get_ylabel() for ax in fig.axes] == list(MINERS)
    for ax, m in zip(fig.axes, MINERS, strict=True):
        labels = {ln.get_label() for ln in ax.get_lines()}
        assert f"{m} at commit" in labels
        assert f"accept threshold {WATERMARK_THRESHOLD}" in labels
        assert not {lb for lb in labels if lb.startswith("miner-") and not lb.startswith(m)}
    lines = _lines(fig)
    assert set(lines) >= {"miner-1 verifier", "miner-2 verifier"}
    assert "miner-3 verifier" not in lines  # never measured: nothing drawn
    at_commit, verifier = lines["miner-1 at commit"], lines["miner-1 verifier"]
    assert at_commit.get_markerfacecolor() == "none" != verifier.get_markerfacecolor()
    assert all(a < b for a, b in zip(at_commit.get_xdata(), verifier.get_xdata(), strict=True))


def test_watermark_figure_zooms_to_the_data_and_the_threshold() -> None:
    fig = watermark_figure(devnet_history())
    assert len({ax.get_ylim() for ax in fig.axes}) == 1  # one scale for every miner
    lo, hi = fig.axes[0].get_ylim()
    data = [v for ln in _lines(fig).values() for v in _finite(ln.get_ydata())]
    assert lo < WATERMARK_THRESHOLD <= min(data) and max(data) < hi
    assert hi - lo < 0.001  # 0.9999 and 1.0 are far apart on screen


def test_watermark_figure_leaves_a_gap_for_a_round_without_results() -> None:
    for label, ln in _lines(watermark_figure(devnet_history())).items():
        if label.startswith("miner-"):
            ys = dict(zip(ln.get_xdata(), ln.get_ydata(), strict=True))
            assert [math.isnan(y) for x, y in ys.items() if round(x) == 4] == [True], label


def test_a_single_point_gets_a_readable_range() -> None:
    history = [{"round": 1, "miner": "miner-1", "claimed_ppm": 995_200,
                "measured_ppm": 995_200, "winner": True}]
    lo, hi = dice_figure(history).axes[0].get_ylim()
    assert lo < 0.9952 < hi and hi - lo >= 0.01


@pytest.mark.parametrize(("values", "expected"), [
    ([], (0.0, 1.0)),
    ([math.nan], (0.0, 1.0)),
    ([0.5, 0.5], (0.495 - 0.0012, 0.505 + 0.0012)),  # min_span 0.01, then 12 % margins
    ([0.0, 1.0, math.nan], (-0.12, 1.12)),
])
def test_zoomed_limits(values: list[float], expected: tuple[float, float]) -> None:
    assert zoomed_limits(values, min_span=0.01) == pytest.approx(expected)


def test_zoomed_limits_room_above_stops_at_the_ceiling() -> None:
    # span 0.04: margins 0.0048 each side, room above 0.02
    assert zoomed_limits([0.95, 0.99], min_span=0.01, top_room=0.5) == \
        pytest.approx((0.9452, 1.0148))
    assert zoomed_limits([0.95, 0.99], min_span=0.01, top_room=0.5, ceiling=1.0) == \
        pytest.approx((0.9452, 1.0048))
    # data above the ceiling stays in view
    assert zoomed_limits([0.95, 1.01], min_span=0.01, top_room=0.5, ceiling=1.0)[1] > 1.01


def test_write_plots_writes_both_pngs(tmp_path: Path) -> None:
    paths = write_plots(devnet_history(), tmp_path / "plots")
    assert [p.name for p in paths] == ["dice.png", "watermark.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_write_plots_of_an_empty_history(tmp_path: Path) -> None:
    paths = write_plots([], tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
