"""The copy defence against models taken from any earlier round (training/sidecars/copy_marks.py).

`MarkIndex` lists every earlier winner and reveal of the same architecture; `foreign_mark` tests
a model against all of them in one batched projection. Real tiny U-Nets, really trained; the
round records are built directly (training/sidecars/offline_records.py), the real-chain
variant is test_copy_index_chain.py.

- a model won two rounds back, stolen and fine-tuned 20 steps with the thief's key, is flagged
  (the old list, this round + the previous winner, let it through);
- independently trained honest models against 250+ earlier marks: none flagged;
- the batched count equals detect_vector's, key by key, for all three matrices.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.server
import json
import threading
from dataclasses import replace
from typing import Any, Self

import numpy as np
import pytest
import torch
from torch import nn

from abci_app.dlbc.records import RoundInfo, RoundStatus, Task, TaskId
from training.artifacts import save_model
from training.data import ArrayDataset, make_segmentation_2d
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.chain_client import ChainClient
from training.sidecars.copy_marks import (
    MarkIndex,
    OtherMark,
    copy_bits_needed,
    foreign_mark,
    marks_to_exclude,
)
from training.sidecars.mark_batch import _make_rows, bits_read
from training.sidecars.offline_records import reveal, round_info, task_spec
from training.sidecars.rpc_client import Backoff, RpcClient
from training.sidecars.scheme import WatermarkScheme
from training.sidecars.sealing import seal_watermark
from training.sidecars.verifier import check_model
from training.trainer import TrainConfig, train
from watermark import WatermarkKey, detect_vector, embed_loss
from watermark.layers import layer_from

HP = {"depth": 2, "base_width": 32}  # watermark layer m = 1152 (see test_copy_defence.py)
SPEC = task_spec("unet2d", '{"base_width": 32, "depth": 2}', "dice")
SCHEME = replace(WatermarkScheme.genesis_default(), matrix="direct")
NEED = copy_bits_needed(SCHEME.n_bits)
A, B, C = bytes([0xA] * 20), bytes([0xB] * 20), bytes([0xC] * 20)
HONEST = [bytes([0x10 + i] * 20) for i in range(4)]


def _seed(n: int) -> bytes:
    return hashlib.sha256(f"round {n} seed".encode()).digest()


def _addr(i: int) -> bytes:
    return hashlib.sha256(f"miner {i}".encode()).digest()[:20]


def _closed(info: RoundInfo) -> RoundInfo:
    return replace(info, record=replace(info.record, status=RoundStatus.CLOSED))


def _task(tid: int, architecture: str = "unet2d") -> Task:
    from abci_app.dlbc.records import Address, Amount, Height, TaskStatus

    return Task(TaskId(tid), Address(b"\1" * 20), replace(SPEC, architecture=architecture),
                Amount(10_000), TaskStatus.PENDING, 0, (), Height(1), 1, 1, None, None, None)


def _train(model: nn.Module, data: ArrayDataset, key: WatermarkKey, epochs: int) -> nn.Module:
    """A miner's work (task loss + E_R, batch 8: 4 steps an epoch), sealed like the miner."""
    cfg = TrainConfig(budget_seconds=120, max_epochs=epochs, batch_size=8, learning_rate=3e-3,
                      device="cpu", progress=False)
    train(model, data, cfg, extra_loss=lambda m: embed_loss(m, key))
    det, _ = seal_watermark(model, key, SCHEME.threshold)
    assert det.ok
    return model


def _history() -> MarkIndex:
    """Rounds 1-3 of the unet2d task: A won round 1, round 2 closed unsettled (C, D revealed),
    round 3 was a cnn task's (A revealed there too: another architecture, not tested)."""
    index = MarkIndex(None)  # fed with add_round, no node asked
    index.add_round(_closed(round_info(1, _seed(1), [A, C], [A, C], won_by=A)), "unet2d")
    index.add_round(_closed(round_info(2, _seed(2), [C, HONEST[3]], [C, HONEST[3]])), "unet2d")
    index.add_round(_closed(round_info(3, _seed(3), [A], [A], won_by=A)), "cnn")
    return index


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    data = make_segmentation_2d(32, 16, seed=5)
    test = make_segmentation_2d(8, 16, seed=6)
    layer = SCHEME.layer(build_model("unet2d", HP, seed=0))
    # A's model, which won round 1 (and so was public from then on)
    a = _train(build_model("unet2d", HP, seed=0), data, SCHEME.key(_seed(1), A, layer), epochs=2)
    # round 4: B steals it two rounds later and fine-tunes 20 steps with its own round-4 key
    b = _train(copy.deepcopy(a), data, SCHEME.key(_seed(4), B, layer), epochs=5)
    # honest miners: each its own model from its own init, marked in a round of its own
    honest = [_train(build_model("unet2d", HP, seed=10 + i), data,
                     SCHEME.key(_seed(10 + i), who, layer), epochs=1)
              for i, who in enumerate(HONEST)]
    root = tmp_path_factory.mktemp("copy-index")
    models = {"a": a, "b": b} | {f"h{i}": h for i, h in enumerate(honest)}
    digests = {name: save_model(m, root / f"{name}.safetensors") for name, m in models.items()}
    with ArtifactServer(root) as srv:
        yield {"srv": srv, "test": test, "digests": digests, "models": models, "layer": layer}


def _kernel(world: Any, name: str) -> np.ndarray:
    return layer_from(world["models"][name], world["layer"])


def test_index_marks_lists_earlier_winners_and_reveals_of_the_architecture() -> None:
    index = _history()
    now = round_info(4, _seed(4), [B, C], [B])
    marks = index.marks(now, _task(1))
    assert marks == [
        OtherMark(B.hex(), _seed(4), "committed in round 4"),
        OtherMark(C.hex(), _seed(4), "committed in round 4"),
        OtherMark(C.hex(), _seed(2), "revealed in round 2"),  # revealers by address
        OtherMark(HONEST[3].hex(), _seed(2), "revealed in round 2"),
        OtherMark(A.hex(), _seed(1), "won round 1"),  # once, although A also revealed
        OtherMark(C.hex(), _seed(1), "revealed in round 1"),
    ]
    assert len(index) == 5 and index.rounds_indexed == 3
    # the cnn task's round is listed for a cnn model, and nothing of round >= 4 ever is
    cnn = index.marks(round_info(4, _seed(4), [], []), _task(2, "cnn"))
    assert cnn == [OtherMark(A.hex(), _seed(3), "won round 3")]
    assert index.marks(round_info(2, _seed(2), [], []), _task(1)) == [
        OtherMark(A.hex(), _seed(1), "won round 1"), OtherMark(C.hex(), _seed(1),
                                                                "revealed in round 1")]


def test_invalid_active_round_is_not_indexed_and_a_round_is_kept_once() -> None:
    index = MarkIndex(None)
    active = round_info(1, _seed(1), [A], [A])
    assert not index.add_round(active, "unet2d")  # its reveals may still change
    assert index.rounds_indexed == 0
    assert index.add_round(_closed(active), "unet2d")
    assert index.add_round(_closed(active), "unet2d")
    assert index.rounds_indexed == 1 and len(index) == 1


def test_index_order_does_not_depend_on_arrival_order() -> None:
    rounds = [_closed(round_info(n, _seed(n), [], [_addr(n), _addr(n + 1)], won_by=_addr(n)))
              for n in range(1, 30)]
    forward, backward = MarkIndex(None), MarkIndex(None)
    for r in rounds:
        forward.add_round(r, "unet2d")
    for r in reversed(rounds):
        backward.add_round(r, "unet2d")
    now = round_info(30, _seed(30), [A], [A])
    assert forward.marks(now, _task(1)) == backward.marks(now, _task(1))


def test_invalid_copy_from_two_rounds_back_is_rejected(world: Any) -> None:
    """B reveals in round 4 a model A won round 1 with (round 2 unsettled, 3 another task's)."""
    now = round_info(4, _seed(4), [B, C], [B, C])
    rev = reveal(B, world["srv"].url_for("b.safetensors"), world["digests"]["b"], 500_000)

    def check(others: list[OtherMark]) -> Any:
        return check_model(rev, SPEC, _seed(4), world["test"], scheme=SCHEME, max_bytes=1 << 24,
                           timeout=10.0, others=others, allow_private=True)

    # What the verifier tested before: this round and the previous round's winner. It passes.
    old = check(marks_to_exclude(now, _closed(round_info(3, _seed(3), [], []))))
    assert old.verdict and old.watermark_ok, old.reason
    chk = check(_history().marks(now, _task(1)))
    assert chk.verdict and not chk.watermark_ok
    assert f"carries {A.hex()}'s watermark" in chk.reason and "won round 1" in chk.reason
    assert chk.watermark_min_confidence > SCHEME.threshold  # B's own mark passed


def test_honest_models_are_not_flagged_by_hundreds_of_earlier_marks(world: Any) -> None:
    """Zero false rejections: 4 independently trained models against 250+ marks each, among
    them the real marks the other honest models carry."""
    index = MarkIndex(None)
    for n in range(1, 66):  # 65 closed rounds, 4 revealers each, one of them the winner
        miners = [_addr(4 * n + j) for j in range(4)]
        index.add_round(_closed(round_info(n, _seed(n), miners, miners, won_by=miners[0])),
                        "unet2d")
    for i, who in enumerate(HONEST):  # each honest model's own (real) mark, in its own round
        index.add_round(_closed(round_info(10 + i + 1000, _seed(10 + i), [who], [who])),
                        "unet2d")
    worst = 0
    for i, who in enumerate(HONEST):
        now = round_info(2000, _seed(2000), [who], [who])
        others = index.marks(now, _task(1))
        assert len(others) >= 250
        w = _kernel(world, f"h{i}")
        assert foreign_mark(w, world["layer"], who.hex(), others, SCHEME) is None
        foreign = [(o.seed, o.miner) for o in others if o.miner != who.hex()]
        reads = bits_read(w, world["layer"], foreign, SCHEME)
        worst = max(worst, int(reads.max()))
    # the margin is wide: chance reads stay near half of the bits, far below the line
    assert NEED is not None and worst < NEED - 40, (worst, NEED)


@pytest.mark.parametrize("matrix", ["direct", "diff", "random"])
def test_bits_read_batched_equals_detect_vector_key_by_key(world: Any, matrix: str) -> None:
    scheme = replace(SCHEME, matrix=matrix)
    n_keys = 6 if matrix == "random" else 80
    keys = [(_seed(n), _addr(n).hex()) for n in range(n_keys)]
    keys.append((_seed(1), A.hex()))  # the mark b really carries (under "direct")
    keys.append((_seed(1), "zz"))  # not an address: skipped (-1), as foreign_mark skips it
    for name in ("b", "h0"):
        w = _kernel(world, name)
        batched = bits_read(w, world["layer"], keys, scheme)
        one_by_one = []
        for seed, miner in keys:
            try:
                key = scheme.key(seed, bytes.fromhex(miner), world["layer"])
            except ValueError:
                one_by_one.append(-1)
                continue
            det = detect_vector(w, key, scheme.threshold)
            one_by_one.append(int(np.count_nonzero(det.confidences > scheme.threshold)))
        assert batched.tolist() == one_by_one
    if matrix == "direct":
        assert bits_read(_kernel(world, "b"), world["layer"], keys[-2:-1], scheme)[0] >= NEED


@pytest.mark.parametrize("matrix", ["direct", "diff"])
def test_cached_key_rows_are_the_projection_matrix(matrix: str) -> None:
    """The batch reads X's non-zeros straight from its generator: pin that they are X's."""
    m = 1152
    scheme = replace(SCHEME, matrix=matrix)
    key = scheme.key(_seed(1), A, "layer")
    x = key.projection(m)  # (T, m)
    rows = _make_rows((_seed(1), A, "layer", matrix, SCHEME.n_bits, m), scheme)
    t = np.arange(SCHEME.n_bits)
    if matrix == "direct":
        assert np.array_equal(np.flatnonzero(x), t * m + rows.idx)
    else:
        assert np.all(x[t, rows.idx[0]] > 0) and np.all(x[t, rows.idx[1]] < 0)
        assert np.count_nonzero(x) == 2 * SCHEME.n_bits
    assert np.array_equal(rows.bits, key.bits())


def test_foreign_mark_returns_the_first_hit_in_list_order(world: Any) -> None:
    w = _kernel(world, "b")
    noise = [OtherMark(_addr(n).hex(), _seed(n), f"revealed in round {n}") for n in range(50)]
    victim = OtherMark(A.hex(), _seed(1), "won round 1")
    hit = foreign_mark(w, world["layer"], B.hex(), [*noise, victim, *noise], SCHEME)
    assert hit is not None and hit.miner == A.hex() and hit.why.endswith("won round 1")
    # the revealing miner's own earlier mark is no theft, whatever its case
    assert foreign_mark(w, world["layer"], A.hex().upper(), [victim], SCHEME) is None


class _OddNode:
    """A tiny JSON-RPC server answering `abci_query` from a dict path -> raw value bytes (None:
    code 1, "not found"), over a real socket: the records a misbehaving node could serve."""

    def __init__(self, answers: dict[str, bytes | None]) -> None:
        self.answers, self.asked = answers, list[str]()
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = req["params"]["path"]
                node.asked.append(path)
                value = node.answers.get(path)
                resp = {"code": 1, "log": "not found"} if value is None else {
                    "code": 0, "value": base64.b64encode(value).decode()}
                body = json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                   "result": {"response": resp}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _doc(info: RoundInfo) -> bytes:
    return json.dumps(info.to_json()).encode()


def test_invalid_odd_records_are_skipped_logged_and_retried() -> None:
    good4 = _closed(round_info(4, _seed(4), [A], [A], won_by=A))
    answers: dict[str, bytes | None] = {
        "rounds/1": b"not json at all",
        "rounds/2": json.dumps({"round": 2}).encode(),  # a record without its fields
        "rounds/3": _doc(good4),  # the node answers another round than asked
        "rounds/4": _doc(good4),
        "rounds/5": None,  # not there
        "tasks/1": json.dumps(_task(1).to_json()).encode(),
    }
    with _OddNode(answers) as node:
        index = MarkIndex(ChainClient(RpcClient(node.url, timeout=5,
                                                backoff=Backoff(attempts=1))))
        now = round_info(6, _seed(6), [B], [B])
        assert index.marks(now, _task(1)) == [
            OtherMark(B.hex(), _seed(6), "committed in round 6"),
            OtherMark(A.hex(), _seed(4), "won round 4")]
        assert index.pending == [1, 2, 3, 5] and index.rounds_indexed == 1
        # the node is fixed: the pending rounds are asked again (only those), and indexed
        answers["rounds/1"] = _doc(_closed(round_info(1, _seed(1), [C], [C])))
        node.asked.clear()
        marks = index.marks(now, _task(1))
        assert sorted(node.asked) == ["rounds/1", "rounds/2", "rounds/3", "rounds/5"]
        assert marks[-1] == OtherMark(C.hex(), _seed(1), "revealed in round 1")
        assert index.pending == [2, 3, 5]


def test_invalid_node_answering_only_errors_costs_a_few_queries() -> None:
    with _OddNode({f"rounds/{n}": b"{" for n in range(1, 10_001)}) as node:
        index = MarkIndex(ChainClient(RpcClient(node.url, timeout=5,
                                                backoff=Backoff(attempts=1))))
        assert index.marks(round_info(10_001, _seed(1), [], []), _task(1)) == []
        assert len(node.asked) == 8  # then the pass stops; the rest waits for the next one
        assert len(index.pending) == 10_000


def test_key_caches_stay_within_their_byte_budgets(world: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded memory: with budgets of a few dozen keys, 300 keys still read the same counts, and
    the caches hold no more than their budgets (least recently used keys go first)."""
    from training.sidecars import mark_batch

    scheme = replace(SCHEME, matrix="diff")
    w = _kernel(world, "h1")
    keys = [(_seed(n), _addr(n).hex()) for n in range(300)]
    mark_batch.clear_cache()
    unbounded = bits_read(w, world["layer"], keys, scheme)
    mark_batch.clear_cache()
    monkeypatch.setattr(mark_batch, "KEY_CACHE_BYTES", 60_000)
    monkeypatch.setattr(mark_batch, "BATCH_CACHE_BYTES", 250_000)  # one 50-key batch (~220 KB)
    for _ in range(2):
        for start in range(0, 300, 50):
            chunk = keys[start:start + 50]
            assert bits_read(w, world["layer"], chunk, scheme).tolist() == \
                unbounded[start:start + 50].tolist()
    assert 0 < mark_batch._cache_bytes <= 60_000
    assert sum(r.nbytes for r in mark_batch._cache.values()) == mark_batch._cache_bytes
    assert 0 < mark_batch._batches_bytes <= 250_000 and len(mark_batch._batches) == 1
    assert len(mark_batch._cache) < 300
    mark_batch.clear_cache()
