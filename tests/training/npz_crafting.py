"""Hand-made `.npz` archives for the loader's tests: bombs, and members that lie about sizes.

Built with the real zipfile and numpy header writers, streaming, so a test can make a 960 MiB
bomb without holding 960 MiB.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np


def streamed_npz(members: dict[str, tuple[str, tuple[int, ...], int]],
                 method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An .npz written member by member: name -> (dtype, header shape, zero bytes of data).

    Zeros are streamed through the compressor 1 MiB at a time, so building a bomb costs the
    test no memory; the header may describe a different size than the data that follows.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, (dtype, shape, data_bytes) in members.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
                chunk = bytes(1 << 20)
                for start in range(0, data_bytes, len(chunk)):
                    f.write(chunk[: min(len(chunk), data_bytes - start)])
    return buf.getvalue()


def npz_bomb() -> bytes:
    """The issue's bomb: uint8 zeros that load_npz converts to 960 MiB of float32 and int64."""
    n, side = 1280, 256  # 80 MiB of uint8 images + 80 MiB of uint8 masks
    raw = n * side * side
    return streamed_npz({"images": ("u1", (n, 1, side, side), raw),
                         "masks": ("u1", (n, side, side), raw)})


def patch_member_size(blob: bytes, member: bytes, file_size: int) -> bytes:
    """Rewrite `member`'s uncompressed size in the zip central directory (what zipfile reads)."""
    out = bytearray(blob)
    at = out.find(b"PK\x01\x02")
    while at >= 0:
        name_len = int.from_bytes(out[at + 28: at + 30], "little")
        if bytes(out[at + 46: at + 46 + name_len]) == member:
            if out[at + 24: at + 28] == b"\xff" * 4:  # zip64: the size sits in the extra field
                extra = at + 46 + name_len
                assert out[extra: extra + 2] == b"\x01\x00"
                out[extra + 4: extra + 12] = file_size.to_bytes(8, "little")
            else:
                out[at + 24: at + 28] = file_size.to_bytes(4, "little")
            return bytes(out)
        at = out.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no member {member!r}")
