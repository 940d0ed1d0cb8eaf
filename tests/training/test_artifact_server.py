"""The artifact server serves its root and nothing outside it (raw sockets, hostile paths)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from training.sidecars.artifact_server import ArtifactServer, resolve_under_root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"A" * 10)
    (root / "sub" / "b c.bin").write_bytes(b"B")
    (tmp_path / "secret.txt").write_bytes(b"SECRET")
    os.symlink(tmp_path / "secret.txt", root / "link")
    return root


@pytest.fixture
def server(tree: Path) -> Iterator[ArtifactServer]:
    with ArtifactServer(tree) as srv:
        yield srv


def _raw_get(server: ArtifactServer, target: str) -> bytes:
    """Send the request line verbatim (httpx would normalise `..` away)."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_serves_files(server: ArtifactServer) -> None:
    r = httpx.get(server.url_for("a.bin"))
    assert r.status_code == 200 and r.content == b"A" * 10
    assert r.headers["content-length"] == "10"
    assert httpx.get(server.url_for("sub/b c.bin")).content == b"B"
    head = httpx.head(server.url_for("a.bin"))
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    "target",
    ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
     "/link", "/", "/sub", "/sub/", "//etc/passwd", "/a.bin%00", "/..\\secret.txt", "/missing"],
)
def test_invalid_paths_get_404(server: ArtifactServer, target: str) -> None:
    response = _raw_get(server, target)
    assert response.startswith(b"HTTP/1.0 404"), response[:60]
    assert b"SECRET" not in response


def test_resolve_under_root(tree: Path) -> None:
    assert resolve_under_root(tree, "/a.bin") == (tree / "a.bin").resolve()
    assert resolve_under_root(tree, "/a.bin?x=1") == (tree / "a.bin").resolve()
    assert resolve_under_root(tree, "/../root/a.bin") is None
    assert resolve_under_root(tree, "/link") is None


def test_invalid_root_must_be_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        ArtifactServer(tmp_path / "nope")


def test_cli_serve_artifacts(tree: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlbc_ops.cli.main", "serve-artifacts", str(tree), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving "), line
        base = line.rsplit(" at ", 1)[1].strip()
        assert httpx.get(base + "a.bin", timeout=5).content == b"A" * 10
    finally:
        proc.terminate()
        proc.wait(timeout=10)
