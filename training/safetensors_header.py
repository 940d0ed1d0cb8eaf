"""Checking a safetensors file's header before a single tensor is allocated.

docs/artifacts.md "Models are safetensors": a revealed model comes from a stranger. The format
is a little-endian u64 header length, a JSON header naming every tensor's dtype, shape and byte
range (`data_offsets`, relative to the end of the header), then the raw bytes. Everything a
loader allocates is decided by that header, so it is checked first, from the bytes alone:

* every tensor's range is inside the file, the ranges tile the data area exactly (contiguous,
  no gap, no overlap, nothing after the last), and each range holds prod(shape) · itemsize bytes;
* when the caller knows the architecture (the registry model the task spec names), the tensor
  names and shapes are exactly its state dict's (`expected`), so a file of the right size but
  the wrong tensors is refused before `safetensors.torch.load` copies anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from training.artifact_errors import NotSafetensors

MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
_MAX_NDIM = 8
# Bytes per element of the dtypes safetensors.torch reads (its names, from the spec).
DTYPE_SIZES: Mapping[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}


def check_safetensors_header(data: bytes | memoryview) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header; raise NotSafetensors with a reason.

    Recognises the usual impostors by their first bytes: a pickle (0x80 protocol byte) and a
    `torch.save` zip archive ("PK"), so the error says what the file actually is. Those bytes
    are also a possible start of a real header length (128 mod 256 begins with 0x80), so they
    are only taken for an impostor when the file is not a plausible safetensors file.
    """
    head = bytes(data[:8])
    header_len = int.from_bytes(head, "little")
    if len(data) < 10 or header_len > MAX_HEADER or 8 + header_len > len(data) \
            or bytes(data[8:9]) != b"{":
        if head[:2] == b"PK":
            raise NotSafetensors("file is a zip archive (torch.save checkpoint?), not "
                                 "safetensors; pickled checkpoints are never loaded")
        if head[:1] == b"\x80":
            raise NotSafetensors("file is a Python pickle, not safetensors; pickles are never "
                                 "loaded")
    if len(data) < 10:
        raise NotSafetensors(f"file too short for safetensors ({len(data)} bytes)")
    if header_len > MAX_HEADER or 8 + header_len > len(data):
        raise NotSafetensors(f"not safetensors: header length {header_len} does not fit the file")
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise NotSafetensors(f"not safetensors: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise NotSafetensors("not safetensors: header is not a JSON object")
    return header


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object without repeated keys: a second entry for a tensor name would be read by
    this check and the loader differently."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise NotSafetensors("not safetensors: a name appears twice in the header")
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_safetensors_layout(
    data: bytes | memoryview, expected: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Check every tensor entry against the file size (and `expected` names → shapes).

    Returns name → (dtype, shape). Raises NotSafetensors naming the first offending tensor.
    """
    header = check_safetensors_header(data)
    data_len = len(data) - 8 - int.from_bytes(bytes(data[:8]), "little")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict)
                                 and all(isinstance(v, str) for v in meta.values())):
        raise NotSafetensors("not safetensors: __metadata__ must map strings to strings")
    entries: list[tuple[int, int, str]] = []
    layout: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise NotSafetensors(f"tensor {name[:80]!r}: entry must have exactly dtype, shape "
                                 "and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise NotSafetensors(f"tensor {name[:80]!r}: unsupported dtype {str(dtype)[:20]!r}")
        if not (isinstance(shape, list) and len(shape) <= _MAX_NDIM
                and all(_is_int(s) and s >= 0 for s in shape)):
            raise NotSafetensors(f"tensor {name[:80]!r}: bad shape {str(shape)[:80]}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_int(o) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise NotSafetensors(f"tensor {name[:80]!r}: bad data_offsets {str(offsets)[:80]}")
        begin, end = offsets
        if end > data_len:
            raise NotSafetensors(f"tensor {name[:80]!r}: bytes {begin}..{end} lie beyond the "
                                 f"file's {data_len} data bytes")
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != size:
            raise NotSafetensors(f"tensor {name[:80]!r}: {dtype}{shape} needs {size} bytes, "
                                 f"its range holds {end - begin}")
        entries.append((begin, end, name))
        layout[name] = (dtype, tuple(shape))
    position = 0
    for begin, end, name in sorted(entries):
        if begin != position:
            raise NotSafetensors(f"tensor {name[:80]!r}: starts at byte {begin}, expected "
                                 f"{position} (tensor ranges must be contiguous, no overlap)")
        position = end
    if position != data_len:
        raise NotSafetensors(f"{data_len - position} bytes after the last tensor")
    if expected is not None:
        _check_expected(layout, expected)
    return layout


def _check_expected(layout: Mapping[str, tuple[str, tuple[int, ...]]],
                    expected: Mapping[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(layout))
    unexpected = sorted(set(layout) - set(expected))
    if missing or unexpected:
        raise NotSafetensors(
            "tensors do not match the architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {[u[:80] for u in unexpected[:5]]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, want in expected.items():
        got = layout[name][1]
        if got != tuple(want):
            raise NotSafetensors(f"shape of {name}: file has {got}, architecture needs "
                                 f"{tuple(want)}")
