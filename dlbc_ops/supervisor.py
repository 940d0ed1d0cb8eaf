"""Start, watch, kill, restart and stop child processes: the one launcher of the project.

Why a supervisor of our own: the operator's Ctrl-C, a crashed node or a failed health check must
all end in the same place — every child stopped, none orphaned. Each child runs in its own
session (process group) so that we can signal its whole tree, gets SIGTERM first (CometBFT and the
app both shut down cleanly on it, the app committing nothing half-done, docs/determinism.md) and
SIGKILL after a grace period. Logs go to DIR/<name>.log, never to our terminal. `dlbc localnet`,
`dlbc devnet` and the tests all start processes through this class, so fault tests (kill -9 one
app, restart it) exercise the same code an operator runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"


class LaunchError(RuntimeError):
    """A child could not be started, or exited / stayed silent where it should have listened."""


@dataclass(slots=True)
class Child:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]


@dataclass(slots=True)
class Supervisor:
    """Owns child processes; `stop()` is idempotent and safe to call from `finally`."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    grace_s: float = 10.0

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start `name` (log DIR/<name>.log, appended to). A `name` that was started before and
        has exited is replaced (a restart with new arguments); one still running is an error."""
        self._forget(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            log_file.close()
            raise LaunchError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
        child = Child(name, list(argv), log_path, popen, log_file)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.popen.poll() is not None]

    def child(self, name: str) -> Child:
        """The child started as `name` (the latest start, after a restart)."""
        for c in reversed(self.children):
            if c.name == name:
                return c
        raise KeyError(name)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout_s: float | None = None) -> int:
        """Signal `name`'s whole process group and wait for it (fault tests: kill -9 one app).

        Returns its exit code; after `timeout_s` without an exit it is SIGKILLed."""
        c = self.child(name)
        _signal_group(c.popen, sig)
        try:
            c.popen.wait(timeout=self.grace_s if timeout_s is None else timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(c.popen, signal.SIGKILL)
            c.popen.wait()
        return c.popen.returncode

    def running(self, name: str) -> bool:
        """Whether `name` was started and has not exited."""
        try:
            return self.child(name).popen.poll() is None
        except KeyError:
            return False

    def restart(self, name: str, *, env: Mapping[str, str] | None = None) -> Child:
        """Start `name` again with the argv it had (its log continues); kills it first if it
        still runs. The old entry is dropped so `stop()` and `exited()` see only the new one."""
        argv = self.child(name).argv
        if self.running(name):
            self.kill(name)
        return self.start(name, argv, env=env)

    def _forget(self, name: str) -> None:
        """Drop the exited child `name` (and what it left in its group); refuse a live one."""
        for old in [c for c in self.children if c.name == name]:
            if old.popen.poll() is None:
                raise LaunchError(f"{name} is already running (pid {old.popen.pid})")
            _signal_group(old.popen, signal.SIGKILL)
            old.log_file.close()
            self.children.remove(old)

    def stop(self, first: Sequence[str] = ()) -> None:
        """SIGTERM every child's process group (newest first), wait, SIGKILL what is left.

        `first`: children stopped one at a time, in that order, before the others (a dev node
        before its app, so that it finishes its block instead of seeing the app vanish).
        SIGINT/SIGTERM are ignored meanwhile: a second Ctrl-C must not abort the cleanup halfway
        and orphan the children not yet stopped."""
        in_main = threading.current_thread() is threading.main_thread()  # else: cannot, no need
        ignored = (signal.SIGINT, signal.SIGTERM) if in_main else ()
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in ignored}
        try:
            for name in first:
                if self.running(name):
                    self.kill(name, signal.SIGTERM)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            _signal_group(child.popen, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in reversed(self.children):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                _signal_group(child.popen, signal.SIGKILL)
                child.popen.wait()
            # Grandchildren the child left behind in its group go too.
            _signal_group(child.popen, signal.SIGKILL)
            child.log_file.close()
        self.children.clear()


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # start_new_session=True: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in text.splitlines()[-lines:])


def wait_for_port(port: int, child: Child, timeout_s: float, host: str = LOOPBACK) -> None:
    """Until `child` accepts TCP on `port`; fails fast if it exits first."""

    def listening() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    _wait_until(listening, child, timeout_s, f"listening on {host}:{port}")


def wait_for_http(url: str, child: Child, timeout_s: float) -> None:
    """Until a GET of `url` (e.g. a node's RPC `/health`) answers 200; fails fast if `child`
    exits first."""

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return int(resp.status) == 200
        except (OSError, ValueError):  # URLError and HTTPError are OSErrors
            return False

    _wait_until(healthy, child, timeout_s, f"answering {url}")


def _wait_until(ready: Callable[[], bool], child: Child, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise LaunchError(
                f"{child.name} exited with code {child.popen.returncode} before {what}; "
                f"last log lines ({child.log_path}):\n{log_tail(child.log_path)}"
            )
        if ready():
            return
        time.sleep(0.1)
    raise LaunchError(
        f"{child.name} was not {what} within {timeout_s:.0f}s; last log lines "
        f"({child.log_path}):\n{log_tail(child.log_path)}"
    )


