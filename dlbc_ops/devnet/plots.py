"""The devnet's PNGs, redrawn after every round from the history rows (`History.rows`):

    dice.png       Dice on the revealed test set per round per miner: claimed (hollow) and
                   verified (filled), the round's winner starred
    watermark.png  min watermark bit confidence per round per miner: the miner's own at commit
                   (hollow) and the verifier's (filled), against the acceptance threshold
    learning_curves.png
                   one round's validation Dice per miner against epochs and against seconds
                   (paper Figs. 10 and 12), from its scored checkpoints (`dlbc_ops.devnet.curves`)

Why it looks like this: on a healthy devnet every score sits in 0.97-0.996 and every confidence
in 0.9999-1.0, so a 0-1 axis collapses all series into one line and the last one drawn hides the
others. Each axis is zoomed to the data (`zoomed_limits`); miners and claimed/verified sit a
little apart on x (`_x_offsets`) with their own marker and line style; a round without a value
is NaN, which breaks the line, so a round without results shows as a gap and a shaded band
rather than a line across it.

`dice_figure`, `watermark_figure` and `learning_curve_figure` build plain `matplotlib.figure.Figure`s (no pyplot: no
global state, safe off the main thread, nothing to close); `write_plots` saves them. matplotlib
is imported here only (Agg canvas, no display), so nothing else pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abci_app.dlbc.params import PPM

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WATERMARK_THRESHOLD = 0.9999
"""Drawn as a dotted line: the confidence a verifier needs to accept a watermark."""

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
MINER_SPREAD = 0.36
"""Width (in rounds) over which a round's miners are spread on x, so equal values stay apart."""
KIND_OFFSET = 0.035
"""How far claimed (left) and verified (right) sit from their miner's x."""
MAX_ANNOTATED_ROUNDS = 15
"""Beyond this many rounds the winner's name and score are left off (the stars stay)."""

History = Sequence[dict[str, Any]]


def zoomed_limits(values: Sequence[float], *, min_span: float, margin: float = 0.12,
                  top_room: float = 0.0, ceiling: float | None = None) -> tuple[float, float]:
    """Axis limits that hold every finite value with `margin` (of the span) either side.

    The span is at least `min_span`, centred on the data, so one point or equal values still
    get a readable range instead of a degenerate one; `top_room` (of the span) leaves space
    above for annotations, but never more than `margin` above `ceiling` (a Dice axis that
    reads 1.005 invites the question). No finite value at all: (0, 1)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    span = hi - lo
    top = hi + (margin + top_room) * span
    if ceiling is not None:
        top = min(top, max(ceiling, hi) + margin * span)
    return lo - margin * span, top


def _rounds(history: History) -> list[int]:
    """Every round from the first to the last in the history, including rounds without rows."""
    seen = [int(h["round"]) for h in history]
    return list(range(min(seen), max(seen) + 1)) if seen else [1]


def _series(history: History, miner: str, rounds: Sequence[int],
            value: Any) -> list[float]:
    """`value(row)` for `miner` in each of `rounds`; NaN where there is no row or no value."""
    by_round = {int(h["round"]): h for h in history if h["miner"] == miner}
    out = []
    for r in rounds:
        row = by_round.get(r)
        v = None if row is None else value(row)
        out.append(math.nan if v is None else float(v))
    return out


def _x_offsets(n_miners: int) -> list[float]:
    """Each miner's x offset within a round, centred on the round."""
    if n_miners <= 1:
        return [0.0] * n_miners
    step = MINER_SPREAD / (n_miners - 1)
    return [-MINER_SPREAD / 2 + i * step for i in range(n_miners)]


def _ppm(key: str) -> Any:
    return lambda row: None if row.get(key) is None else row[key] / PPM


def _new_figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(8.5, 4.5))


def _draw_pair(ax: Axes, xs: Sequence[float], own: Sequence[float], checked: Sequence[float],
               *, i: int, color: str, labels: tuple[str, str]) -> None:
    """One miner's two series: the miner's own values hollow and dashed, slightly left; the
    validator's filled and solid, slightly right. A series without any value is not drawn."""
    marker = MARKERS[i % len(MARKERS)]
    for ys, dx, filled, style, label in ((own, -KIND_OFFSET, False, "--", labels[0]),
                                         (checked, KIND_OFFSET, True, "-", labels[1])):
        if all(math.isnan(y) for y in ys):
            continue
        ax.plot([x + dx for x in xs], ys, linestyle=style, marker=marker, color=color,
                markersize=6, linewidth=1.3, markerfacecolor=color if filled else "none",
                markeredgewidth=1.4, label=label)


def _shade_empty_rounds(ax: Axes, rounds: Sequence[int], has_data: Sequence[bool]) -> None:
    """A light band over each round with no value at all, labelled once in the legend."""
    if not any(has_data):  # nothing at all yet: no round is "without results"
        return
    labelled = False
    for r, ok in zip(rounds, has_data, strict=True):
        if not ok:
            ax.axvspan(r - 0.5, r + 0.5, color="0.92", zorder=0,
                       label=None if labelled else "round without results")
            labelled = True


def _style_axes(ax: Axes, rounds: Sequence[int]) -> None:
    """Whole rounds on x with half a round of margin (one round alone still reads "1"), plain
    decimals on y, a light grid, the legend outside."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    # as many digits as the ticks need, written out: no "1e-5 + 0.9999" offset text
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    ax.grid(True, axis="y", color="0.85", linewidth=0.6)
    if ax.get_legend_handles_labels()[0]:  # an empty history has nothing to list
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def dice_figure(history: History) -> Figure:
    """Claimed and verified Dice per round per miner, winners starred and named."""
    fig = _new_figure()
    ax = fig.add_subplot()
    miners = sorted({h["miner"] for h in history})
    rounds = _rounds(history)
    colors = [f"C{i % 10}" for i in range(len(miners))]
    values: list[float] = []
    has_data = [False] * len(rounds)
    for i, (m, dx) in enumerate(zip(miners, _x_offsets(len(miners)), strict=True)):
        claimed = _series(history, m, rounds, _ppm("claimed_ppm"))
        verified = _series(history, m, rounds, _ppm("measured_ppm"))
        _draw_pair(ax, [r + dx for r in rounds], claimed, verified, i=i, color=colors[i],
                   labels=(f"{m} claimed", f"{m} verified"))
        values += claimed + verified
        has_data = [d or not (math.isnan(c) and math.isnan(v))
                    for d, c, v in zip(has_data, claimed, verified, strict=True)]
    _shade_empty_rounds(ax, rounds, has_data)
    _mark_winners(ax, history, miners, rounds)
    ax.set_ylim(*zoomed_limits(values, min_span=0.01, top_room=0.35, ceiling=1.0))
    ax.set(title="DLBC devnet: Dice per round (hollow: claimed, filled: verified)",
           xlabel="round", ylabel="Dice on the revealed test set")
    _style_axes(ax, rounds)
    fig.tight_layout()
    return fig


def _mark_winners(ax: Axes, history: History, miners: Sequence[str],
                  rounds: Sequence[int]) -> None:
    """A star on each round's winning score (the verified one, else the claim), with its name."""
    offsets = dict(zip(miners, _x_offsets(len(miners)), strict=True))
    xs, ys, notes = [], [], []
    for h in sorted(history, key=lambda h: int(h["round"])):
        ppm = h.get("measured_ppm", h.get("claimed_ppm"))
        if h.get("winner") is not True or ppm is None:
            continue
        dx = KIND_OFFSET if "measured_ppm" in h else -KIND_OFFSET
        xs.append(int(h["round"]) + offsets[h["miner"]] + dx)
        ys.append(ppm / PPM)
        notes.append(f"{h['miner']}\n{ppm / PPM:.4f}")
    if not xs:
        return
    ax.plot(xs, ys, linestyle="none", marker="*", markersize=15, color="gold",
            markeredgecolor="black", markeredgewidth=0.8, zorder=5, label="round winner")
    if len(rounds) <= MAX_ANNOTATED_ROUNDS:
        for x, y, note in zip(xs, ys, notes, strict=True):
            ax.annotate(note, (x, y), xytext=(0, 9), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)


def watermark_figure(history: History) -> Figure:
    """One panel per miner (shared axes): its min watermark bit confidence per round at
    commit and as the verifier measured it, against the acceptance threshold.

    Panels, not one axes: on a healthy chain every confidence is 1.0, and lines of several
    miners at 1.0 would lie on top of each other whatever their markers."""
    from matplotlib.figure import Figure

    miners = sorted({h["miner"] for h in history}) or ["(no miner yet)"]
    rounds = _rounds(history)
    fig = Figure(figsize=(8.5, 1.2 + 1.7 * len(miners)))
    axes = fig.subplots(len(miners), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    values = [WATERMARK_THRESHOLD]  # the threshold is always in view: it is what matters
    for i, (m, ax) in enumerate(zip(miners, axes, strict=True)):
        own = _series(history, m, rounds, lambda row: row.get("watermark_confidence"))
        checked = _series(history, m, rounds, lambda row: row.get("verifier_confidence"))
        _draw_pair(ax, rounds, own, checked, i=i, color=f"C{i % 10}",
                   labels=(f"{m} at commit", f"{m} verifier"))
        _shade_empty_rounds(ax, rounds, [not (math.isnan(a) and math.isnan(b))
                                         for a, b in zip(own, checked, strict=True)])
        ax.axhline(WATERMARK_THRESHOLD, color="grey", linestyle=":",
                   label=f"accept threshold {WATERMARK_THRESHOLD}")
        ax.set_ylabel(m)
        values += own + checked
    axes[0].set_ylim(*zoomed_limits(values, min_span=5e-5))  # shared by every panel
    axes[0].set_title("DLBC devnet: min watermark bit confidence (hollow: miner at commit, "
                      "filled: verifier)")
    axes[-1].set_xlabel("round")
    for ax in axes:
        _style_axes(ax, rounds)
    fig.tight_layout()
    return fig


def write_plots(history: History, out: Path) -> list[Path]:
    """OUT/dice.png and OUT/watermark.png from the history rows."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in (("dice.png", dice_figure), ("watermark.png", watermark_figure)):
        build(history).savefig(out / name, dpi=100)
        paths.append(out / name)
    return paths


LEARNING_CURVES_PNG = "learning_curves.png"
LOG_EPOCHS_ABOVE = 100
"""Epochs are drawn on a log axis when the last plotted epoch is more than this many times the
first (over two decades): a curve changes fastest early, and a linear axis would squeeze the
first tens of epochs of a long run into its left edge."""

Curves = Mapping[str, Sequence[Mapping[str, Any]]]


def learning_curve_figure(curves: Curves, round_no: int) -> Figure:
    """Two panels for round `round_no`: validation Dice against epochs (left) and against
    seconds of training (right), one line per miner; `curves` maps a miner's name to its
    points, rows with "epoch", "seconds" and "score" (a fraction: `training.learning_curve`).

    Why both axes: epochs say how much a model saw of the data, seconds what the miner paid
    for it; the chain rewards the result of the seconds (issue 14, paper Figs. 10 and 12).
    A miner without points is left out; with none at all the panels say so."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    fig = Figure(figsize=(11, 4.2))
    by_epoch, by_seconds = fig.subplots(1, 2, sharey=True)
    drawn = {m: sorted(pts, key=lambda p: int(p["epoch"])) for m, pts in sorted(curves.items())
             if pts}
    scores: list[float] = []
    epochs: list[int] = []
    for i, (miner, pts) in enumerate(drawn.items()):
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "markersize": 5,
                 "linewidth": 1.4, "label": miner}
        ep = [int(p["epoch"]) for p in pts]
        ys = [float(p["score"]) for p in pts]
        by_epoch.plot(ep, ys, **style)
        by_seconds.plot([float(p["seconds"]) for p in pts], ys, **style)
        scores += ys
        epochs += ep
    if epochs and max(epochs) > LOG_EPOCHS_ABOVE * min(epochs):
        by_epoch.set_xscale("log")
        by_epoch.xaxis.set_major_formatter(ScalarFormatter())
    if not drawn:
        for ax in (by_epoch, by_seconds):
            ax.text(0.5, 0.5, "no scored checkpoints", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
    by_epoch.set_ylim(*zoomed_limits(scores, min_span=0.05, ceiling=1.0))
    by_epoch.set(xlabel="epoch", ylabel="Dice on the revealed test set")
    by_seconds.set(xlabel="seconds of training")
    for ax in (by_epoch, by_seconds):
        ax.grid(True, color="0.88", linewidth=0.6)
    if drawn:
        by_seconds.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"DLBC devnet: round {round_no} learning curves (validation Dice per "
                 "checkpoint)")
    fig.tight_layout()
    return fig


def write_learning_curves(curves: Curves, round_no: int, out: Path) -> Path:
    """Save `learning_curve_figure(curves, round_no)` to `out`: the PNG's path when it ends in
    ".png", else a folder that gets `learning_curves.png`. Returns the file written."""
    path = out if out.suffix.lower() == ".png" else out / LEARNING_CURVES_PNG
    path.parent.mkdir(parents=True, exist_ok=True)
    learning_curve_figure(curves, round_no).savefig(path, dpi=100)
    return path
