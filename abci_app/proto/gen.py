"""Regenerate every Python protobuf module under abci_app/pb/ from the .proto files here.

Run: ``python -m abci_app.proto.gen``. Idempotent: the same sources give byte-identical output.

Why our own generator step: protoc emits absolute imports such as ``from tendermint.abci import
...`` (the proto package path), which would need ``abci_app/pb`` on ``sys.path``. We rewrite them to
``abci_app.pb.tendermint...`` so the generated code imports cleanly as part of the package
(COMMON.md: ``abci_app.pb.tendermint.abci.types_pb2``, ``abci_app.pb.dlbc.v1.<name>_pb2``).
Google well-known types (timestamp, duration, wrappers) come from the protobuf runtime.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PB_ROOT = PROTO_ROOT.parent / "pb"
# Top-level proto packages we own; imports of these get the `abci_app.pb.` prefix.
_OWN_TOP = ("tendermint", "dlbc")
_IMPORT_RE = re.compile(r"^(from|import) (" + "|".join(_OWN_TOP) + r")([.\w]*)", re.MULTILINE)


def find_protos() -> list[Path]:
    return sorted(p for p in PROTO_ROOT.rglob("*.proto"))


def _rewrite(text: str) -> str:
    return _IMPORT_RE.sub(lambda m: f"{m.group(1)} abci_app.pb.{m.group(2)}{m.group(3)}", text)


def _ensure_packages(out_file: Path) -> None:
    """Create `__init__.py` in every folder between PB_ROOT and the generated module."""
    folder = out_file.parent
    while True:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf package (see abci_app/proto/gen.py)."""\n')
        if folder == PB_ROOT:
            break
        folder = folder.parent


def generate() -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # dev dependency; only needed to regenerate

    wkt_include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    protos = find_protos()
    if not protos:
        raise SystemExit("no .proto files found under " + str(PROTO_ROOT))
    PB_ROOT.mkdir(parents=True, exist_ok=True)
    rel = [str(p.relative_to(PROTO_ROOT)) for p in protos]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt_include}",
        f"--python_out={PB_ROOT}",
        f"--pyi_out={PB_ROOT}",
        *rel,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    written: list[Path] = []
    for r in rel:
        stem = Path(r).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi"):
            out = PB_ROOT / (str(stem) + suffix)
            out.write_text(_rewrite(out.read_text()))
            _ensure_packages(out)
            written.append(out)
    return written


def main() -> int:
    written = generate()
    print(f"generated {len(written)} files under {PB_ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
