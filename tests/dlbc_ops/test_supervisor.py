"""dlbc_ops.supervisor: the one launcher of `dlbc localnet`, `dlbc devnet` and the tests."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from dlbc_ops.ports import free_port
from dlbc_ops.supervisor import LaunchError, Supervisor, wait_for_http, wait_for_port

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def test_restart_with_new_arguments_replaces_an_exited_child(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, grace_s=5)
    try:
        first = sup.start("job", [sys.executable, "-c", "print('one')"])
        first.popen.wait(10)
        assert not sup.running("job") and sup.exited() == [first]
        second = sup.start("job", [sys.executable, "-c", "print('two')"])
        second.popen.wait(10)
        assert sup.children == [second] and sup.child("job") is second
        assert (tmp_path / "job.log").read_text().split() == ["one", "two"]  # the log continues
        sup.start("sleeper", SLEEPER)
        assert sup.running("sleeper")
        with pytest.raises(LaunchError, match="already running"):
            sup.start("sleeper", SLEEPER)
    finally:
        sup.stop()
    assert sup.children == [] and not sup.running("sleeper")


def test_stop_first_stops_those_before_the_rest(tmp_path: Path) -> None:
    """A child that outlives its `first` peer proves the order: "b" must still run when "a" dies."""
    sup = Supervisor(tmp_path, grace_s=5)
    a = sup.start("a", SLEEPER)
    b = sup.start("b", SLEEPER)
    seen: list[bool] = []

    def watch() -> None:
        a.popen.wait()
        seen.append(b.popen.poll() is None)

    t = threading.Thread(target=watch)
    t.start()
    sup.stop(first=("a",))
    t.join(10)
    assert seen == [True]
    assert a.popen.returncode == -signal.SIGTERM and b.popen.returncode == -signal.SIGTERM


def test_stop_from_another_thread(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, grace_s=5)
    child = sup.start("s", SLEEPER)
    t = threading.Thread(target=sup.stop)
    t.start()
    t.join(10)
    assert child.popen.poll() is not None and sup.children == []


def test_wait_for_port_and_http(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, grace_s=5)
    port = free_port()
    try:
        child = sup.start("web", _http_server(port))
        wait_for_port(port, child, 30)
        wait_for_http(f"http://127.0.0.1:{port}/", child, 30)
    finally:
        sup.stop()


def test_invalid_child_exits_before_ready_fails_fast_with_its_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, grace_s=5)
    try:
        child = sup.start("bad", [sys.executable, "-c", "import sys; sys.exit('boom: no config')"])
        t0 = time.monotonic()
        with pytest.raises(LaunchError, match=r"bad exited with code 1 before answering (.|\n)*boom"):
            wait_for_http(f"http://127.0.0.1:{free_port()}/health", child, 30)
        assert time.monotonic() - t0 < 10
        quiet = sup.start("quiet", SLEEPER)
        with pytest.raises(LaunchError, match="quiet was not listening on 127.0.0.1:"):
            wait_for_port(free_port(), quiet, 0.5)
    finally:
        sup.stop()


def test_invalid_binary_is_a_launch_error(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    with pytest.raises(LaunchError, match="cannot start nope"):
        sup.start("nope", [str(tmp_path / "no-such-binary")])
    assert sup.children == []
