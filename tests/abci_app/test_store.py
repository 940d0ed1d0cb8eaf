"""store: LMDB-backed committed state, staged nestable views, the app-hash chain."""

from __future__ import annotations

import hashlib
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abci_app.store import Store, StoreError, compute_app_hash


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db", map_size=1 << 26)
    yield s
    s.close()


def test_fresh_store_is_at_height_zero(store: Store) -> None:
    assert store.last_height == 0
    assert store.last_app_hash == b""
    assert store.get(b"x") is None


def test_commit_persists_writes_height_and_hash(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", map_size=1 << 26)
    v = s.view()
    v.set(b"a", b"1")
    v.set(b"b", b"2")
    v.delete(b"b")
    s.commit(v, 7, b"H" * 32)
    s.close()
    s = Store(tmp_path / "db", map_size=1 << 26)
    assert (s.last_height, s.last_app_hash) == (7, b"H" * 32)
    assert s.get(b"a") == b"1"
    assert s.get(b"b") is None
    s.close()


def test_staged_writes_invisible_to_committed_reads(store: Store) -> None:
    v = store.view()
    v.set(b"a", b"1")
    assert v.get(b"a") == b"1"
    assert store.get(b"a") is None
    assert list(store.iter_prefix(b"")) == []


def test_child_write_through_and_discard(store: Store) -> None:
    v = store.view()
    ok = v.child()
    ok.set(b"k", b"kept")
    ok.write_through()
    bad = v.child()
    bad.set(b"k", b"dropped")
    bad.set(b"other", b"dropped")
    del bad  # a failed tx: its layer is simply dropped
    assert v.get(b"k") == b"kept"
    assert v.get(b"other") is None
    assert v.writes() == [(b"k", b"kept")]


def test_invalid_write_through_twice(store: Store) -> None:
    c = store.view().child()
    c.write_through()
    with pytest.raises(StoreError):
        c.write_through()


def test_invalid_commit_of_child_view(store: Store) -> None:
    with pytest.raises(StoreError):
        store.commit(store.view().child(), 1, b"")


def test_invalid_commit_twice(store: Store) -> None:
    v = store.view()
    store.commit(v, 1, b"h")
    with pytest.raises(StoreError):
        store.commit(v, 2, b"h")


def test_invalid_key_types(store: Store) -> None:
    v = store.view()
    with pytest.raises(TypeError):
        v.set("str", b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        v.set(b"", b"x")


def test_iter_prefix_reverse_with_ff_bytes(store: Store) -> None:
    v = store.view()
    for k in (b"a\xff", b"a\xff\x00", b"a\xff\xff", b"b", b"\xff\xff"):
        v.set(k, k)
    store.commit(v, 1, b"")
    assert [k for k, _ in store.iter_prefix(b"a\xff", reverse=True)] == [
        b"a\xff\xff", b"a\xff\x00", b"a\xff"]
    assert [k for k, _ in store.iter_prefix(b"\xff", reverse=True)] == [b"\xff\xff"]
    assert next(k for k, _ in store.iter_prefix(b"", reverse=True)) == b"\xff\xff"


_keys = st.binary(min_size=1, max_size=3)
_ops = st.lists(
    st.tuples(st.sampled_from(["set", "del", "child_ok", "child_drop"]), _keys, st.binary(max_size=2)),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(committed=st.dictionaries(_keys, st.binary(max_size=2), max_size=15), ops=_ops,
       prefix=st.binary(max_size=2))
def test_view_matches_dict_model(tmp_path: Path, committed: dict[bytes, bytes],
                                 ops: list[tuple[str, bytes, bytes]], prefix: bytes) -> None:
    """Merged iteration equals a plain dict model, through nested layers, both directions."""
    s = Store(Path(tempfile.mkdtemp(dir=tmp_path)), map_size=1 << 24)
    try:
        v0 = s.view()
        for k, val in committed.items():
            v0.set(k, val)
        s.commit(v0, 1, b"")
        model = dict(committed)
        view = s.view()
        for op, k, val in ops:
            if op == "set":
                view.set(k, val)
                model[k] = val
            elif op == "del":
                view.delete(k)
                model.pop(k, None)
            else:
                c = view.child()
                c.set(k, val + b"!")
                c.delete(k[:1] + b"\x00")
                if op == "child_ok":
                    c.write_through()
                    model[k] = val + b"!"
                    model.pop(k[:1] + b"\x00", None)
        want = sorted((k, val) for k, val in model.items() if k.startswith(prefix))
        assert list(view.iter_prefix(prefix)) == want
        assert list(view.iter_prefix(prefix, reverse=True)) == want[::-1]
        nested = view.child()
        assert list(nested.iter_prefix(prefix)) == want
        for k in {k for _, k, _ in ops}:
            assert view.get(k) == model.get(k)
            assert view.has(k) == (k in model)
        s.commit(view, 2, b"")
        assert list(s.iter_prefix(prefix)) == want
    finally:
        s.close()


def test_compute_app_hash_exact_encoding() -> None:
    writes = [(b"a", b"xy"), (b"b", None)]
    expected = hashlib.sha256(
        b"dlbc/app-hash/v1" + b"\x02" + b"PH" + struct.pack(">q", 5)
        + b"\x01a\x01\x02xy" + b"\x01b\x00"
    ).digest()
    assert compute_app_hash(b"PH", 5, writes) == expected


def test_compute_app_hash_depends_on_every_input() -> None:
    base = compute_app_hash(b"p", 1, [(b"k", b"v")])
    assert compute_app_hash(b"q", 1, [(b"k", b"v")]) != base
    assert compute_app_hash(b"p", 2, [(b"k", b"v")]) != base
    assert compute_app_hash(b"p", 1, [(b"k", b"w")]) != base
    assert compute_app_hash(b"p", 1, [(b"k", None)]) != base
    # Unambiguous framing: moving a byte between key and value changes the hash.
    assert compute_app_hash(b"p", 1, [(b"ab", b"c")]) != compute_app_hash(b"p", 1, [(b"a", b"bc")])


def test_invalid_compute_app_hash_unsorted_writes() -> None:
    with pytest.raises(StoreError):
        compute_app_hash(b"", 1, [(b"b", b""), (b"a", b"")])
    with pytest.raises(StoreError):
        compute_app_hash(b"", 1, [(b"a", b""), (b"a", b"")])
