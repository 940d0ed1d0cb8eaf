"""Reading `.npz` archives from strangers with memory bounded *before* anything is inflated.

docs/artifacts.md "Data sets": a publisher's data set is an `.npz` (a zip of `.npy` files) that
miners and validators decode. Deflate turns a few hundred kilobytes of zeros into a gigabyte,
and the loader then converts the arrays (uint8 → float32 images, → int64 targets), so capping
the download alone let a 0.13 MB archive grow to 960 MiB in memory. `numpy.load` allocates
whatever a member's `.npy` header claims before reading a byte of data, so it is not used here.

Instead, per member that will be read:

1. the zip central directory gives its uncompressed size (`ZipInfo.file_size`);
2. its `.npy` header (a few hundred bytes, read through zipfile) gives dtype and shape; header
   length + prod(shape) · itemsize must equal that uncompressed size exactly, so neither the
   directory nor the header can claim less than the other;
3. the size of every array *as the caller will convert it* is summed and checked against the
   cap before any array data is read;
4. data is read into an array of exactly the planned size; zipfile stops at the directory's
   size and checks the CRC at the end, so a member whose real content is longer or shorter than
   it says fails instead of growing.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self, cast

import numpy as np

_MAX_NDIM = 8
_MAX_HEADER = 10_000  # numpy's own default limit on an .npy header
# BadZipFile: CRC mismatch (content differs from what the directory says) or a bad local header;
# EOFError/zlib.error: a stream that ends early or is corrupt; RuntimeError: an
# encrypted member; NotImplementedError: an unknown compression method.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError,
               NotImplementedError)


class ArchiveError(ValueError):
    """An archive that is malformed, lies about its sizes, or would decode past the cap."""


@dataclass(frozen=True)
class MemberPlan:
    """What reading one `.npy` member will allocate, known before its data is read."""

    name: str
    info: zipfile.ZipInfo
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    fortran_order: bool
    header_len: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def raw_bytes(self) -> int:
        return self.count * self.dtype.itemsize


class BoundedNpz:
    """An open `.npz` whose members are read only after their sizes were checked.

    Use as a context manager: ``with BoundedNpz(data) as npz: plans = npz.plan({...}, cap)``.
    """

    def __init__(self, source: bytes | str | Path) -> None:
        stream: IO[bytes] | Path = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        try:
            self._zip = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(f"not a readable .npz archive: {exc}") from None
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename.removesuffix(".npy")
            if name in self._members:  # zipfile would silently pick the last one
                self._zip.close()
                raise ArchiveError(f"npz has two members named {info.filename!r}")
            self._members[name] = info

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    @property
    def names(self) -> frozenset[str]:
        """Array names (member names without `.npy`)."""
        return frozenset(self._members)

    def plan(self, decoded_itemsize: Mapping[str, int], max_bytes: int) -> dict[str, MemberPlan]:
        """Check the headers of the named arrays; refuse if converting them exceeds `max_bytes`.

        `decoded_itemsize[name]` is the bytes per element the caller will hold once it converted
        the array (4 for float32 images, 8 for int64 targets). The raw arrays are held at the
        same time as the converted ones, so both totals must fit the cap.
        """
        plans = {name: self._header(name) for name in decoded_itemsize}
        decoded = sum(p.count * decoded_itemsize[n] for n, p in plans.items())
        raw = sum(p.raw_bytes for p in plans.values())
        if max(decoded, raw) > max_bytes:
            shapes = ", ".join(f"{n} {p.dtype}{list(p.shape)}" for n, p in plans.items())
            raise ArchiveError(f"npz would decode to {max(decoded, raw)} bytes ({shapes}), "
                               f"more than the cap of {max_bytes}")
        return plans

    def read(self, plan: MemberPlan) -> np.ndarray:
        """The member's array, read into exactly the planned allocation."""
        out = np.empty(plan.count, dtype=plan.dtype)
        view = out.data.cast("B")
        try:
            with self._zip.open(plan.info) as opened:
                f = cast("zipfile.ZipExtFile", opened)
                f.read(plan.header_len)
                filled = 0
                while filled < plan.raw_bytes:
                    n = f.readinto(view[filled:])
                    if not n:
                        raise ArchiveError(f"npz member {plan.name!r} is shorter than its header "
                                           f"says ({filled} of {plan.raw_bytes} data bytes)")
                    filled += n
                if f.read(1):  # never: zipfile stops at the directory's size
                    raise ArchiveError(f"npz member {plan.name!r} is longer than its header says")
        except _ZIP_ERRORS as exc:
            raise ArchiveError(f"npz member {plan.name!r} unreadable: {exc}") from None
        if plan.fortran_order:
            return out.reshape(plan.shape[::-1]).transpose()
        return out.reshape(plan.shape)

    def _header(self, name: str) -> MemberPlan:
        info = self._members.get(name)
        if info is None:
            raise ArchiveError(f"npz has no {name!r} array (found: {sorted(self._members)})")
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                        f, max_header_size=_MAX_HEADER)
                elif version == (2, 0):  # (3, 0) only differs for non-Latin-1 field names
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                        f, max_header_size=_MAX_HEADER)
                else:
                    raise ArchiveError(f"npz member {name!r}: unsupported .npy version {version}")
                header_len = f.tell()
        except ArchiveError:
            raise
        except _ZIP_ERRORS as exc:
            raise ArchiveError(f"npz member {name!r} unreadable: {exc}") from None
        except (ValueError, SyntaxError) as exc:
            raise ArchiveError(f"npz member {name!r}: bad .npy header ({exc})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
                or dtype.kind not in "biuf":
            raise ArchiveError(f"npz member {name!r}: dtype {dtype} is not a plain number type "
                               "(object arrays are never unpickled)")
        if len(shape) > _MAX_NDIM or any(int(s) < 0 for s in shape):
            raise ArchiveError(f"npz member {name!r}: bad shape {shape}")
        plan = MemberPlan(name, info, dtype, tuple(int(s) for s in shape), bool(fortran),
                          header_len)
        if header_len + plan.raw_bytes != info.file_size:
            raise ArchiveError(
                f"npz member {name!r}: its header describes {plan.raw_bytes} data bytes "
                f"({dtype}{list(plan.shape)}) but the archive says it holds "
                f"{info.file_size - header_len}")
        return plan
