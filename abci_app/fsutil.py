"""Crash-safe file writes shared by every process that leaves files for another to read.

Key files, genesis documents, verdict files (read by ExtendVote) and publisher task records are all
read by a different process than the one writing them, possibly right after a crash: a reader must
see the old file or the new one, never half of either. Hence: temp file in the same folder (same
filesystem, so the rename is atomic), fsync, `os.replace`, and optionally an fsync of the folder
so the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_writer(
    path: Path | str, *, mode: int = 0o644, durable: bool = True, durable_dir: bool = False
) -> Iterator[IO[bytes]]:
    """Yield a temp file beside `path`, renamed onto it when the block ends without error.

    For streamed writes (encrypted data sets, model files) as well as small documents. The temp
    file gets `mode` before any data lands in it, so a 0600 key is never readable by others, not
    even half-written. `durable` fsyncs before the rename (a crash never leaves a renamed but
    empty file); skip it only for files that are cheap to redo. On any failure the temp file is
    removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable_dir:
        fsync_dir(path.parent)


def atomic_write(path: Path | str, data: bytes, *, mode: int = 0o644, durable_dir: bool = False) -> Path:
    """Replace `path` with `data` atomically and durably (see `atomic_writer`)."""
    with atomic_writer(path, mode=mode, durable_dir=durable_dir) as fh:
        fh.write(data)
    return Path(path)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (best effort: not every filesystem allows it)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
