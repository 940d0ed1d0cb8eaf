"""The miner's background threads (docs/processes.md "The miner's threads"): one training thread
and a download thread per prefetched round.

Why threads at all: with pipelined rounds (docs/rounds.md) round n+1 trains while round n
reveals, and the next round's encrypted data can be fetched while it is ANNOUNCED. A miner that
trained on its poll loop would block for all of TRAIN and miss round n's REVEAL; one that
fetched the data only at key time would leave the GPU idle for the download. So the poll loop
only decides and sends txs; training runs on one worker thread (never two trainings at once:
a round whose key lands while the previous round still trains waits its turn in FIFO order),
and downloads run on their own daemon threads, each bounded by its deadline and minimum rate.

Results go back to the loop through futures; a finished training wakes the loop (`on_done`) so
its commit is sent within milliseconds instead of at the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from training.sidecars.miner_state import RoundWork

log = logging.getLogger("dlbc.miner")


class MinerWorker:
    """One training thread, one download thread per round; everything stops in `close`."""

    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        self.halt = threading.Event()
        """Set by `close`: the running training stops at its next epoch end, uncommitted."""
        self._on_done = on_done
        self._trainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="miner-train")
        self._jobs: dict[int, Future[RoundWork]] = {}
        self._downloads: dict[int, Future[Path]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- downloads

    def prefetch(self, n: int, fetch: Callable[[], Path]) -> Future[Path]:
        """Run `fetch` (round `n`'s download) on a daemon thread; a later call for the same
        round returns the same future unless the earlier one failed."""
        with self._lock:
            old = self._downloads.get(n)
            if old is not None and not (old.done() and old.exception() is not None):
                return old
            fut: Future[Path] = Future()
            self._downloads[n] = fut

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fetch())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                fut.set_exception(exc)

        t = threading.Thread(target=run, name=f"miner-fetch-{n}", daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return fut

    def download(self, n: int) -> Future[Path] | None:
        """Round `n`'s prefetch, if one was started."""
        with self._lock:
            return self._downloads.get(n)

    def forget(self, n: int) -> None:
        """Drop round `n`'s futures (the round closed)."""
        with self._lock:
            self._downloads.pop(n, None)
            job = self._jobs.get(n)
            if job is not None and job.done():
                del self._jobs[n]

    # -- training

    def submit(self, n: int, job: Callable[[], RoundWork]) -> Future[RoundWork]:
        """Queue round `n`'s training behind any other (one training at a time)."""
        fut = self._trainer.submit(job)
        with self._lock:
            self._jobs[n] = fut
        if self._on_done is not None:
            wake = self._on_done
            fut.add_done_callback(lambda _f: wake())
        return fut

    def has_job(self, n: int) -> bool:
        """Whether round `n`'s training is queued, running, or finished but not collected."""
        with self._lock:
            return n in self._jobs

    @property
    def training(self) -> bool:
        """Whether a training is queued or running."""
        with self._lock:
            return any(not f.done() for f in self._jobs.values())

    def finished(self) -> list[tuple[int, Future[RoundWork]]]:
        """The trainings that ended since the last call (each handed out once), oldest first."""
        with self._lock:
            done = sorted((n, f) for n, f in self._jobs.items() if f.done())
            for n, _f in done:
                del self._jobs[n]
        return done

    # -- shutdown

    def close(self, download_wait: float = 5.0) -> None:
        """Stop the training at its next epoch end (queued ones never start) and wait for it;
        give running downloads `download_wait` seconds (each also ends at its own deadline)."""
        self.halt.set()
        self._trainer.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=download_wait)
            if t.is_alive():
                log.warning("download thread %s still running; it ends at its deadline", t.name)
