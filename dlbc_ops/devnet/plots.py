"""The devnet's two PNGs, redrawn after every round from the history rows (`History.rows`):

    dice.png       Dice on the revealed test set per round per miner (claimed and verified)
    watermark.png  min watermark bit confidence per round per miner (the verifier's when known)

matplotlib is imported here only (Agg backend, no display), so nothing else pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abci_app.dlbc.params import PPM

WATERMARK_THRESHOLD = 0.9999
"""Drawn as a dotted line: the confidence a verifier needs to accept a watermark."""


def write_plots(history: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Dice per round per miner (claimed and verified) and watermark confidence per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    miners = sorted({h["miner"] for h in history})
    rounds = [int(h["round"]) for h in history] or [1]

    def finish(fig: Any, ax: Any, name: str) -> Path:
        # Whole rounds only, with half a round of margin: one round alone still reads "1".
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return out / name

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in miners:
        rows = sorted((h for h in history if h["miner"] == m), key=lambda h: h["round"])
        xs = [h["round"] for h in rows if "claimed_ppm" in h]
        ax.plot(xs, [h["claimed_ppm"] / PPM for h in rows if "claimed_ppm" in h], "o--",
                label=f"{m} claimed")
        xs = [h["round"] for h in rows if "measured_ppm" in h]
        ax.plot(xs, [h["measured_ppm"] / PPM for h in rows if "measured_ppm" in h], "s-",
                label=f"{m} verified")
    ax.set_xlabel("round")
    ax.set_ylabel("Dice on the revealed test set")
    ax.set_title("DLBC devnet: Dice per round")
    ax.set_ylim(-0.02, 1.02)
    paths = [finish(fig, ax, "dice.png")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in miners:
        rows = sorted((h for h in history if h["miner"] == m), key=lambda h: h["round"])
        # the validator's measurement when there is one, else the miner's own
        pts = [(int(h["round"]), float(c)) for h in rows
               if (c := h.get("verifier_confidence", h.get("watermark_confidence"))) is not None]
        ax.plot([r for r, _ in pts], [c for _, c in pts], "o-", label=m)
    ax.axhline(WATERMARK_THRESHOLD, color="grey", linestyle=":",
               label=f"threshold {WATERMARK_THRESHOLD}")
    ax.set_xlabel("round")
    ax.set_ylabel("min watermark bit confidence")
    ax.set_title("DLBC devnet: watermark confidence")
    ax.set_ylim(0, 1.02)
    paths.append(finish(fig, ax, "watermark.png"))
    return paths
