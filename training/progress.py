"""A minimal progress bar (tqdm is not a dependency).

On a terminal it redraws one line in place at most ~10 times a second; on a pipe or log file it
prints a plain line at most every `log_interval` seconds, so a miner's log stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`update(n, note)` advances by `n` of `total` steps; `close()` prints the final state."""

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
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = 0.1 if self._tty else log_interval
        self._start = time.monotonic()
        self._last = self._start

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.count = min(self.total, self.count + n)
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self.enabled and now - self._last >= self._interval:
            self._last = now
            self._draw(final=False)

    def render(self) -> str:
        filled = self.width * self.count // self.total
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._start
        return (f"{self.desc} [{bar}] {self.count}/{self.total} {elapsed:6.1f}s"
                + (f" {self.note}" if self.note else ""))

    def _draw(self, *, final: bool) -> None:
        line = self.render()
        if self._tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(final=True)
