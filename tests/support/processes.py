"""Finding processes a test left behind: every test must clean up what it starts, also when
it fails, and these let a test assert it did (by the home folder the children were given)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    """PIDs (other than ours) whose command line contains `text`, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def default_sigint() -> None:
    """`preexec_fn` for a CLI whose Ctrl-C a test checks: SIGINT back to its default.

    A shell that starts a job in the background (`make test &`, CI runners, nohup) sets SIGINT
    to "ignore", children inherit that, and Python then never raises KeyboardInterrupt: the
    Ctrl-C under test would be lost through no fault of the CLI."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_cli(proc: subprocess.Popen[str], home: str, grace_s: float = 30.0) -> None:
    """Stop a CLI a failed test left running, and the children it started in their own
    sessions: SIGTERM first (the CLI's own orderly shutdown stops them), then SIGKILL for
    whatever still mentions `home`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in processes_mentioning(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
