"""The trainer's progress bar: `rich` on a terminal, a plain line now and then in a log.

On a terminal `rich` redraws the bar in place (at most ~10 times a second). A miner's stderr is
usually a log file or a pipe, where a redrawn bar is a wall of carriage returns, so there the
bar prints a plain line at most every `log_interval` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressBar:
    """`update(n, note)` advances by `n` of `total` steps; `close()` shows the final state."""

    def __init__(
        self, total: int, desc: str = "", *, stream: TextIO | None = None, enabled: bool = True,
        width: int = 24, log_interval: float = 10.0,
    ) -> None:
        self.total = max(1, total)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.count = 0
        self.note = ""
        self._start = time.monotonic()
        self._last = self._start
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = 0.1 if tty else log_interval
        self._live: Progress | None = None
        if enabled and tty:
            self._live = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=width),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                console=Console(file=self.stream), auto_refresh=False,
            )
            self._task = self._live.add_task(desc, total=self.total, note="")
            self._live.start()

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.count = min(self.total, self.count + n)
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self.enabled and now - self._last >= self._interval:
            self._last = now
            self._draw()

    def render(self) -> str:
        """The plain one-line form a log gets."""
        filled = self.width * self.count // self.total
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._start
        return (f"{self.desc} [{bar}] {self.count}/{self.total} {elapsed:6.1f}s"
                + (f" {self.note}" if self.note else ""))

    def _draw(self) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=self.count, note=self.note, refresh=True)
        else:
            self.stream.write(self.render() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._draw()
        if self._live is not None:
            self._live.stop()
