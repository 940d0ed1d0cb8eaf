"""Committed tx/s and broadcast-to-commit latency of DLBC on a real CometBFT localnet, against
the same CometBFT binary running its built-in Go kvstore app, measured in the same run.

For each validator count (default 1, then 4) two localnets are prepared exactly as an operator's
`dlbc localnet --validators N --prepare-only --no-fallback` prepares them (same generated
config.toml: timeouts, mempool, empty blocks; same genesis with the bench accounts funded):

- dlbc:    started with the project's own `start_localnet` (N `python -m abci_app` + N nodes);
- kvstore: the same kind of home, nodes started as `cometbft node --proxy_app kvstore` (the Go
           app in process, no Python at all);
- pykv:    (`--apps`, on by default) the same as dlbc but `python -m abci_app --app kvstore`, the
           project's small key=value app (no signatures, one LMDB write per tx): what the
           out-of-process socket transport and our server cost, without the state machine.

Load: `--clients` concurrent clients (threads, one keep-alive HTTP connection each) send JSON-RPC
`broadcast_tx_sync` to node 0 (`--spread`: client i to node i mod N; with 4 validators the
other nodes then get their txs by mempool gossip). Each client owns one funded genesis account
and sends DLBC `Transfer`s with nonces 0, 1, 2, ... tracked locally: a tx the mempool refused
as full is re-sent with the same nonce, and when CometBFT answered a tx with code 0 but then
dropped it (it does when the mempool fills between CheckTx and insertion; the next recheck
drops the later ones) the client re-sends from the nonce the app says it expects ("nonce
rewinds"). For kvstore it sends unique `key=value` txs of the same length. All txs are built
and signed *before* any node starts, so the load generator costs the same on both sides.

Measurement: a websocket subscription to node 0's `NewBlockEvents` stamps each height with the
local time node 0 committed it (the event fires after the app's Commit). After `--warmup` s of
load the window opens for `--duration` s; the blocks node 0 committed inside it are fetched
(`/block`, `/block_results`) and every tx in them is matched by SHA-256 to its broadcast:
committed tx/s = successful (code 0) txs in the window's blocks after the first one, divided by
the time between the first and the last block of the window (exact between two commits).
Latency = node 0's commit time of the block - the time the accepted broadcast was sent, p50/p99.
Also printed: the broadcast round trip, each process's CPU (cores) over the window, the
machine's load average (other work on a shared machine skews a run; `--rounds 2` or more runs
kvstore/dlbc pairs in ABBA order and compares medians), and that every node committed the
window's last block with the same app hash.

CPU accounting (`cpu_report`): each side's CPU per committed tx (nodes, apps, load generator),
and the budget the goal leaves on this machine: at 0.90 x kvstore's rate the cores give
cores / rate us per tx, kvstore's own chain and load use theirs, and DLBC must fit what it adds
(socket transport, one ed25519 check per tx and validator - timed in this process - and the
rest of its state machine) into the difference. Where the signature checks alone exceed it,
no app that checks signatures can reach the goal on these cores, and the report says so.

Config: the generated config is used as is and printed (the settings that bound throughput);
nothing in it favours one side, so nothing is changed. Not a setting but worth knowing: the
Go kvstore runs inside the node, while DLBC answers over CometBFT's socket ABCI client (one
write and one read per CheckTx batch, each way); the kvstore side reaches the mempool's
`size` (5000 txs) every block at 1 validator, so its rate there is bounded by size/interval.

Run: .venv/bin/python bench/cometbft_throughput.py [--validators 1,4] [--clients 32]
     [--warmup 5] [--duration 20] [--rounds 1] [--spread] [--cometbft PATH] [--keep]
The last line is `ratio dlbc/kvstore committed tx/s: X.XX (4 validators)` (the last count run).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from abci_app.dlbc.crypto import (
    ED25519_BACKEND,
    TX_SIGN_DOMAIN,
    address_of,
    public_key_bytes,
    verify_ed25519,
)
from dlbc_ops.cli import main as cli
from dlbc_ops.cometbft import find_cometbft, pinned_line
from dlbc_ops.localnet import layout
from dlbc_ops.localnet import plan as lp
from dlbc_ops.localnet.ports import busy_ports
from dlbc_ops.localnet.runner import (
    node_command,
    node_context,
    start_localnet,
    wait_for_height,
)
from dlbc_ops.supervisor import Supervisor, wait_for_port

CHAIN_ID = "dlbc-bench-throughput"
SINK = bytes.fromhex("42" * 20)  # every Transfer pays this (unfunded) account
BALANCE = 10**15
HOST = "127.0.0.1"
_EXPECTS = re.compile(r"expects (\d+)")
#: The sides of a run. kvstore: the Go app inside the node (the issue's baseline). pykv and dlbc
#: are `python -m abci_app --app X` behind CometBFT's socket client: pykv (the project's small
#: key=value app, no signatures) costs what the out-of-process socket transport and our server
#: cost, so pykv - kvstore is the transport's share of the gap and dlbc - pykv the state machine's
#: (of which one ed25519 verification per tx and validator, timed in this process, is the floor).
PYTHON_APPS = {"pykv": "kvstore", "dlbc": "dlbc"}
APPS = ("kvstore", *PYTHON_APPS)


# -- txs, built before anything starts ---------------------------------------------------------
def client_seed(i: int) -> bytes:
    return hashlib.sha256(b"bench/cometbft_throughput/client-%d" % i).digest()


def client_address(i: int) -> str:
    key = Ed25519PrivateKey.from_private_bytes(client_seed(i))
    return address_of(public_key_bytes(key)).hex()


def sign_transfers(i: int, count: int, chain_id: str) -> list[bytes]:
    """Client i's `count` Transfers, nonces 0..count-1 (worker process). Same bytes as
    `txs.build_signed_tx` (checked for the first one), without re-deriving the public key."""
    from abci_app.dlbc import txs
    from abci_app.dlbc.crypto import TX_SIGN_DOMAIN
    from abci_app.pb.dlbc.v1 import tx_pb2

    key = Ed25519PrivateKey.from_private_bytes(client_seed(i))
    pub = public_key_bytes(key)
    try:
        from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

        _, sk = crypto_sign_seed_keypair(client_seed(i))

        def sign(msg: bytes) -> bytes:
            return bytes(crypto_sign(msg, sk)[:64])
    except ImportError:
        sign = key.sign
    msg = txs.transfer(SINK, 1)
    out = []
    for nonce in range(count):
        body = tx_pb2.TxBody(chain_id=chain_id, nonce=nonce, transfer=msg).SerializeToString()
        out.append(tx_pb2.SignedTx(body=body, public_key=pub,
                                   signature=sign(TX_SIGN_DOMAIN + body)).SerializeToString())
    if out and out[0] != txs.build_signed_tx(key, chain_id, 0, msg):
        raise RuntimeError("bench tx encoding differs from txs.build_signed_tx")
    return out


def kv_txs(i: int, count: int, size: int, tag: str) -> list[bytes]:
    """Unique `key=value` txs of `size` bytes (only [a-z0-9], one '=': valid for kvstore)."""
    out = []
    for n in range(count):
        key = f"{tag}c{i:03d}n{n:08d}"
        out.append(f"{key}={'v' * max(1, size - len(key) - 1)}".encode())
    return out


# -- minimal HTTP/1.1 keep-alive client (load generator) and the block watch --------------------------------------
class HttpConn:
    """One keep-alive connection to a CometBFT RPC; POST a body, get the response body."""

    def __init__(self, port: int, timeout_s: float = 15.0) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.buf = b""
        self.head = (b"POST / HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " % (HOST.encode(), port))

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("RPC closed the connection")
        self.buf += data

    def post(self, body: bytes) -> bytes:
        sock = self.sock or self._connect()
        try:
            sock.sendall(self.head + b"%d\r\n\r\n" % len(body) + body)
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                self._fill(sock)
            headers = self.buf[:end].lower()
            self.buf = self.buf[end + 4:]
            if b"transfer-encoding: chunked" in headers:
                return self._chunked(sock)
            start = headers.find(b"content-length:")
            if start < 0:
                raise ConnectionError("RPC response without Content-Length")
            length = int(headers[start + 15:].split(b"\r\n", 1)[0])
            while len(self.buf) < length:
                self._fill(sock)
            out, self.buf = self.buf[:length], self.buf[length:]
            if b"connection: close" in headers:
                self.close()
            return out
        except (OSError, ValueError):
            self.close()
            raise

    def _chunked(self, sock: socket.socket) -> bytes:
        out = bytearray()
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                self._fill(sock)
            size = int(self.buf[:eol].split(b";")[0], 16)
            while len(self.buf) < eol + 2 + size + 2:
                self._fill(sock)
            out += self.buf[eol + 2:eol + 2 + size]
            self.buf = self.buf[eol + 2 + size + 2:]
            if size == 0:
                return bytes(out)


class BlockWatch(threading.Thread):
    """Subscribes to node 0's NewBlockEvents; records (local monotonic time, num_txs) per height."""

    def __init__(self, port: int) -> None:
        super().__init__(name="block-watch", daemon=True)
        self.port = port
        self.commits: dict[int, tuple[float, int]] = {}
        self.error: str | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.conn: ClientConnection | None = None

    def stop(self) -> None:
        self._stop.set()
        if self.conn is not None:
            self.conn.close()

    def run(self) -> None:
        try:
            self._run()
        except (OSError, ValueError, KeyError, TypeError, InvalidHandshake) as exc:
            if not self._stop.is_set():  # the main thread reports it
                self.error = f"{type(exc).__name__}: {exc}"
        except ConnectionClosed as exc:
            if not self._stop.is_set():
                self.error = f"websocket closed by the node: {exc}"
        finally:
            self.ready.set()

    def _run(self) -> None:
        # proxy=None: node 0 is on localhost; compression=None: CometBFT does not deflate.
        self.conn = ws_connect(f"ws://{HOST}:{self.port}/websocket", open_timeout=10,
                               proxy=None, compression=None, max_size=None, legacy=True)
        sub = {"jsonrpc": "2.0", "id": 1, "method": "subscribe",
               "params": {"query": "tm.event='NewBlockEvents'"}}
        self.conn.send(json.dumps(sub))
        while not self._stop.is_set():
            raw = self.conn.recv()
            self._on_message(raw.encode() if isinstance(raw, str) else raw, time.monotonic())

    def _on_message(self, raw: bytes, now: float) -> None:
        doc = json.loads(raw)
        if doc.get("error"):
            raise ConnectionError(f"subscribe failed: {doc['error']}")
        value = ((doc.get("result") or {}).get("data") or {}).get("value")
        if not value:
            self.ready.set()  # the empty answer to `subscribe`
            return
        self.commits[int(value["height"])] = (now, int(value.get("num_txs") or 0))


def rpc(port: int, path: str, timeout_s: float = 30.0) -> Any:
    with urllib.request.urlopen(f"http://{HOST}:{port}/{path}", timeout=timeout_s) as resp:
        body = json.loads(resp.read())
    if "error" in body:
        raise RuntimeError(f"RPC {path}: {body['error']}")
    return body["result"]


# -- load ---------------------------------------------------------------------------------------
@dataclass
class ClientStats:
    accepted: int = 0
    full_retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    exhausted: bool = False
    rtts: list[float] = field(default_factory=list)  # seconds per broadcast_tx_sync answered
    rewinds: int = 0


def client_loop(txs: list[bytes], sent: list[float], port: int, stop: threading.Event,
                stats: ClientStats) -> None:
    """Send txs in order (nonce order), one broadcast_tx_sync at a time; `sent[k]` = time the
    accepted broadcast of txs[k] was sent. A full mempool: same tx again shortly."""
    conn = HttpConn(port)
    k = 0
    rid = 0
    try:
        while not stop.is_set():
            if k >= len(txs):
                stats.exhausted = True
                return
            rid += 1
            body = b'{"jsonrpc":"2.0","id":%d,"method":"broadcast_tx_sync","params":{"tx":"%s"}}' % (
                rid, base64.b64encode(txs[k]))
            t = time.monotonic()
            try:
                raw = conn.post(body)
            except (OSError, ValueError) as exc:
                stats.errors[f"connection: {type(exc).__name__}"] += 1
                stop.wait(0.05)
                continue
            stats.rtts.append(time.monotonic() - t)
            doc = json.loads(raw)
            res = doc.get("result")
            if res is not None and int(res.get("code", 0)) == 0:
                sent[k] = t
                stats.accepted += 1
                k += 1
                continue
            text = str(doc.get("error", {}).get("data") or doc.get("error") or
                       f"code {res.get('code') if res else '?'}: {(res or {}).get('log', '')}")
            if "mempool is full" in text:
                stats.full_retries += 1
                stop.wait(0.01)
                continue
            if "already exists in cache" in text:  # a re-send after a lost answer
                sent[k] = t
                stats.accepted += 1
                k += 1
                continue
            expects = _EXPECTS.search(text)
            if expects is not None and int(expects.group(1)) < k:
                # CometBFT answered an earlier tx of ours with code 0 and then dropped it (a
                # mempool that filled up between CheckTx and insertion does that), and the
                # recheck after the next block dropped the later ones: send again from there.
                stats.rewinds += 1
                k = int(expects.group(1))
                continue
            stats.errors[text[:120]] += 1
            if sum(stats.errors.values()) > 50:
                return  # something is wrong for this client: stop, it is reported
            stop.wait(0.05)
    finally:
        conn.close()


# -- one localnet -------------------------------------------------------------------------------
@dataclass
class Result:
    app: str
    validators: int
    committed: int = 0
    failed_in_block: int = 0
    foreign: int = 0
    span_s: float = 0.0
    blocks: int = 0
    rate: float = 0.0
    p50: float = math.nan
    p99: float = math.nan
    accepted: int = 0
    full_retries: int = 0
    rewinds: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    exhausted: int = 0
    block_interval_s: float = 0.0
    rtt_p50: float = math.nan
    rtt_p99: float = math.nan
    app_hashes: int = 0  # distinct app hashes the nodes report at the window's last height
    load_before: float = 0.0
    load_after: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


def free_base_port(validators: int) -> int:
    for base in range(45017, 60000, 211):
        if not busy_ports(layout.plan_ports(validators, base)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


def prepare_home(home: Path, validators: int, cometbft: str, accounts: list[str]) -> lp.LocalnetPlan:
    argv = ["localnet", "--validators", str(validators), "--home", str(home),
            "--base-port", str(free_base_port(validators)), "--prepare-only", "--no-fallback",
            "--cometbft", cometbft, "--chain-id", CHAIN_ID]
    for addr in accounts:
        argv += ["--account", f"{addr}={BALANCE}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(argv)
    if rc != 0:
        raise RuntimeError(f"dlbc localnet --prepare-only failed ({rc}):\n{out.getvalue()}")
    plan = lp.load_plan(home)
    if plan is None:
        raise RuntimeError(f"{home}: no localnet.json after --prepare-only")
    return plan


def start_kvstore(plan: lp.LocalnetPlan, sup: Supervisor, cometbft: str) -> None:
    """The same node homes, but `cometbft node --proxy_app kvstore`: the Go app in process."""
    contexts = [node_context(plan, i) for i in range(plan.validators)]
    nodes = [sup.start(f"cometbft{c.i}", [*node_command(cometbft, c), "--proxy_app", "kvstore"])
             for c in contexts]
    for ctx, child in zip(contexts, nodes, strict=True):
        wait_for_port(plan.node_ports(ctx.i).rpc, child, 90)
    wait_for_height(plan, sup, 1, 90)


def proc_cpu(pid: int) -> float:
    """utime+stime (s) of process `pid` and its waited-for children, from /proc (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def agreed_app_hashes(plan: lp.LocalnetPlan, height: int) -> int:
    """Distinct app hashes in the nodes' committed headers at `height` (1: every node reached
    it with the same state; a node whose app diverged halts on the mismatch and never does)."""
    hashes = set()
    for i in range(plan.validators):
        port = plan.node_ports(i).rpc
        got = None
        for _ in range(40):  # a peer may be a block or two behind node 0
            try:
                got = rpc(port, f"commit?height={height}")["signed_header"]["header"]["app_hash"]
                break
            except (OSError, ValueError, KeyError, TypeError, RuntimeError):
                time.sleep(0.25)
        hashes.add(got if got is not None else f"node{i}: not at height {height}")
    return len(hashes)


def fetch_blocks(port: int, heights: list[int]) -> dict[int, tuple[list[bytes], list[int]]]:
    out: dict[int, tuple[list[bytes], list[int]]] = {}
    for h in heights:
        block = rpc(port, f"block?height={h}")
        txs = [base64.b64decode(t) for t in block["block"]["data"]["txs"] or []]
        results = rpc(port, f"block_results?height={h}")
        codes = [int(r.get("code", 0) or 0) for r in results.get("txs_results") or []]
        if len(codes) != len(txs):
            raise RuntimeError(f"height {h}: {len(txs)} txs but {len(codes)} results")
        out[h] = (txs, codes)
    return out


def run_one(app: str, validators: int, args: argparse.Namespace, cometbft: str,
            txsets: list[list[bytes]], accounts: list[str], workdir: Path, tag: str) -> Result:
    res = Result(app, validators)
    res.load_before = os.getloadavg()[0]
    home = workdir / f"{app}-{validators}v-{tag}"
    home.mkdir()
    plan = prepare_home(home, validators, cometbft, accounts)
    sup = Supervisor(home / "logs", grace_s=5.0)
    stop = threading.Event()
    watch: BlockWatch | None = None
    threads: list[threading.Thread] = []
    try:
        if app == "kvstore":
            start_kvstore(plan, sup, cometbft)
        else:
            start_localnet(plan, sup, cometbft=cometbft, verifiers=False, startup_timeout_s=90,
                           say=lambda _s: None, app=PYTHON_APPS[app])
        wait_for_height(plan, sup, 2, 60)
        rpc0 = plan.node_ports(0).rpc
        watch = BlockWatch(rpc0)
        watch.start()
        if not watch.ready.wait(15) or watch.error:
            raise RuntimeError(f"websocket subscription failed: {watch.error or 'timeout'}")
        ports = [plan.node_ports(i % validators if args.spread else 0).rpc
                 for i in range(args.clients)]
        sent = [[0.0] * len(t) for t in txsets]
        stats = [ClientStats() for _ in txsets]
        for i, txs in enumerate(txsets):
            th = threading.Thread(target=client_loop, args=(txs, sent[i], ports[i], stop, stats[i]),
                                  name=f"client{i}", daemon=True)
            threads.append(th)
        for th in threads:
            th.start()
        time.sleep(args.warmup)
        cpu0 = {c.name: proc_cpu(c.popen.pid) for c in sup.children}
        cpu0["bench"] = time.process_time()
        t0 = time.monotonic()
        deadline = t0 + args.duration
        while (now := time.monotonic()) < deadline:
            dead = sup.exited()
            if dead:
                raise RuntimeError(f"{dead[0].name} exited during the load; see {dead[0].log_path}")
            if watch.error:
                raise RuntimeError(f"block watch failed: {watch.error}")
            time.sleep(min(0.5, deadline - now))
        t1 = time.monotonic()
        cpu1 = {c.name: proc_cpu(c.popen.pid) for c in sup.children}
        cpu1["bench"] = time.process_time()
        stop.set()
        for th in threads:
            th.join(20)
        time.sleep(0.3)
        watch.stop()
        res.cpu = {n: (cpu1[n] - cpu0.get(n, 0.0)) / (t1 - t0) for n in cpu1}
        in_window = sorted(h for h, (t, _) in watch.commits.items() if t0 <= t <= t1)
        if len(in_window) < 2:
            raise RuntimeError(f"fewer than 2 blocks committed in the {args.duration}s window")
        first, last = in_window[0], in_window[-1]
        res.span_s = watch.commits[last][0] - watch.commits[first][0]
        res.blocks = len(in_window) - 1
        res.block_interval_s = res.span_s / res.blocks
        where = {hashlib.sha256(tx).digest(): (i, k)
                 for i, txs in enumerate(txsets) for k, tx in enumerate(txs) if sent[i][k]}
        blocks = fetch_blocks(rpc0, in_window[1:])
        latencies = []
        for h in in_window[1:]:
            commit_t, num_txs = watch.commits[h]
            txs, codes = blocks[h]
            if len(txs) != num_txs:
                raise RuntimeError(f"height {h}: event said {num_txs} txs, block has {len(txs)}")
            for tx, code in zip(txs, codes, strict=True):
                if code != 0:
                    res.failed_in_block += 1
                    continue
                loc = where.get(hashlib.sha256(tx).digest())
                if loc is None:
                    res.foreign += 1
                    continue
                res.committed += 1
                latencies.append(commit_t - sent[loc[0]][loc[1]])
        res.rate = res.committed / res.span_s
        res.app_hashes = agreed_app_hashes(plan, last)
        res.load_after = os.getloadavg()[0]
        if latencies:
            latencies.sort()
            res.p50 = statistics.median(latencies)
            res.p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
        rtts = sorted(x for s in stats for x in s.rtts)
        if rtts:
            res.rtt_p50 = rtts[len(rtts) // 2]
            res.rtt_p99 = rtts[min(len(rtts) - 1, math.ceil(0.99 * len(rtts)) - 1)]
        for s in stats:
            res.accepted += s.accepted
            res.full_retries += s.full_retries
            res.rewinds += s.rewinds
            res.errors.update(s.errors)
            res.exhausted += s.exhausted
        return res
    finally:
        stop.set()
        if watch is not None:
            watch.stop()
        sup.stop()
        for th in threads:
            th.join(5)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


# -- report -------------------------------------------------------------------------------------
def config_summary(cometbft: str, workdir: Path, accounts: list[str]) -> list[str]:
    """The generated settings that bound throughput (read from a freshly prepared node0)."""
    home = workdir / "config-probe"
    home.mkdir()
    try:
        prepare_home(home, 1, cometbft, accounts)
        cfg = tomllib.loads((home / "node0" / "config" / "config.toml").read_text())
        gen = json.loads((home / "node0" / "config" / "genesis.json").read_text())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    c, m = cfg.get("consensus", {}), cfg.get("mempool", {})
    block = gen.get("consensus_params", {}).get("block", {})
    first = ("config (dlbc localnet --prepare-only, used as is by both apps): "
             f"timeout_commit={c.get('timeout_commit')} "
             f"timeout_propose={c.get('timeout_propose')} "
             f"create_empty_blocks={c.get('create_empty_blocks')}")
    second = (
        f"  mempool: type={m.get('type', 'flood')} size={m.get('size')} "
        f"max_txs_bytes={m.get('max_txs_bytes')} max_tx_bytes={m.get('max_tx_bytes')} "
        f"cache_size={m.get('cache_size')} recheck={m.get('recheck')} "
        f"broadcast={m.get('broadcast')}; block max_bytes={block.get('max_bytes')}; "
        f"tx_index={cfg.get('tx_index', {}).get('indexer')} log_level={cfg.get('log_level')}")
    return [first, second]


def fmt_result(r: Result) -> str:
    errs = sum(r.errors.values())
    agree = "same on every node" if r.app_hashes == 1 else f"{r.app_hashes} DIFFERENT values"
    cpu = " ".join(f"{k}={v:.2f}" for k, v in sorted(r.cpu.items()))
    line = (f"  {r.app:<7} {r.validators} val: {r.rate:8.1f} tx/s committed ({r.committed} txs "
            f"in {r.blocks} blocks over {r.span_s:.2f}s, {r.block_interval_s:.2f}s/block); "
            f"latency p50 {r.p50 * 1000:.0f} ms p99 {r.p99 * 1000:.0f} ms\n"
            f"          broadcast_tx_sync round trip p50 {r.rtt_p50 * 1000:.1f} ms "
            f"p99 {r.rtt_p99 * 1000:.1f} ms; accepted {r.accepted}, "
            f"mempool-full retries {r.full_retries}, nonce rewinds {r.rewinds}, "
            f"errors {errs}, failed in block {r.failed_in_block}, unknown txs {r.foreign}; "
            f"app hash at the last height: {agree}"
            f"\n          CPU cores used: {cpu}; machine load average {r.load_before:.1f} before, "
            f"{r.load_after:.1f} after")
    if r.errors:
        line += "\n          errors: " + "; ".join(f"{n}x {t}" for t, n in r.errors.most_common(3))
    if r.exhausted:
        line += (f"\n          WARNING: {r.exhausted} client(s) ran out of pre-built txs: "
                 "raise --max-rate (the rate above is the generator's, not the chain's)")
    return line


def cpu_per_tx(r: Result) -> dict[str, float]:
    """us of CPU per committed tx, by kind of process (cores used over the window / tx/s):
    the cost of one tx to the machine, whatever limited the rate."""
    kinds = {"nodes": 0.0, "apps": 0.0, "load": 0.0}
    for name, cores in r.cpu.items():
        kind = "nodes" if name.startswith("cometbft") else "apps" if name.startswith("app") else "load"
        kinds[kind] += cores
    return {k: v * 1e6 / r.rate if r.rate else math.inf for k, v in kinds.items()}


def verify_cost_us(signed_txs: list[bytes]) -> float:
    """CPU us of one tx signature check by the chain's own rule (best of 3 passes): the least
    every validator's app spends on every tx, which kvstore never does."""
    from abci_app.pb.dlbc.v1 import tx_pb2

    parsed = [tx_pb2.SignedTx.FromString(t) for t in signed_txs]
    best = math.inf
    for _ in range(3):
        c = time.process_time()
        for t in parsed:
            if not verify_ed25519(t.public_key, t.signature, TX_SIGN_DOMAIN + t.body):
                raise RuntimeError("a bench tx does not verify")
        best = min(best, (time.process_time() - c) / len(parsed))
    return best * 1e6


def cpu_report(n: int, results: dict[str, list[Result]], rate: dict[str, float],
               cores: int, verify_us: float) -> list[str]:
    """Where the CPU of a committed tx goes, side by side, and what the goal leaves the app.

    On a machine whose cores the localnet and its load generator share, a rate of R tx/s needs
    R x (CPU per tx) <= cores. At the goal, R = 0.90 x kvstore's rate: so the CPU per tx that
    DLBC may spend in all (nodes, apps, load) is cores / R, and what it may add to kvstore's own
    is that minus kvstore's. pykv (the same socket transport, no state machine) and the timed
    signature check split what DLBC adds into its layers, measured in the same run."""
    per = {app: {k: statistics.median(cpu_per_tx(r)[k] for r in rs)
                 for k in ("nodes", "apps", "load")} for app, rs in results.items()}
    total = {app: sum(v.values()) for app, v in per.items()}
    out = [(f"  CPU per committed tx, {plural(n)} (us, all processes; = cores used / tx/s; "
            f"{cores} cores in all):")]
    for app, v in per.items():
        out.append(f"    {app:<12} nodes {v['nodes']:5.0f}  apps {v['apps']:5.0f}  load "
                   f"{v['load']:4.0f}  total {total[app]:5.0f}   at {rate[app]:7.1f} tx/s; all "
                   f"{cores} cores at this cost would carry {cores * 1e6 / total[app]:6.0f} tx/s")
    goal = 0.90 * rate["kvstore"]
    budget = cores * 1e6 / goal if goal else math.inf
    room = budget - total["kvstore"]
    extra = total["dlbc"] - total["kvstore"]
    floor = n * verify_us
    if "pykv" in total:
        transport = total["pykv"] - total["kvstore"]
        steps = [f"socket transport and Python server {transport:+.0f} (pykv)",
                 (f"the state machine {total['dlbc'] - total['pykv']:+.0f}, of which "
                 f"{n} x {verify_us:.0f} = {floor:.0f} are the signature checks alone")]
    else:
        steps = [f"of which {n} x {verify_us:.0f} = {floor:.0f} are the signature checks alone"]
    verdict = ("within it" if extra <= room else
               f"over it by {extra - room:.0f} us per tx: at its measured cost DLBC cannot reach "
               f"0.90 on {cores} cores, whatever the app does with its idle time")
    out.append(f"  goal budget, {plural(n)}: 0.90 x kvstore = {goal:.0f} tx/s gives {budget:.0f} "
               f"us of CPU per tx on {cores} cores; kvstore's own chain and load use "
               f"{total['kvstore']:.0f}, leaving {room:.0f} us for all DLBC adds. It adds "
               f"{extra:.0f} ({'; '.join(steps)}): {verdict}")
    if floor > room:
        out.append(f"  -> with {n} validator(s) sharing {cores} cores, the signature checks alone "
                   f"({floor:.0f} us per tx) exceed the {room:.0f} us the goal leaves: 0.90 is out "
                   f"of reach on this machine for any app that checks each tx's signature once "
                   f"per validator")
    return out


def plural(n: int) -> str:
    return f"{n} validator" if n == 1 else f"{n} validators"


# -- main ---------------------------------------------------------------------------------------
class Terminated(Exception):
    pass


def _on_term(signum: int, _frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


def watchdog(limit_s: float) -> threading.Timer:
    """Hard bound on the whole run: interrupt the main thread (its finally blocks clean up)."""
    import _thread

    def fire() -> None:
        print(f"error: run exceeded --max-seconds {limit_s:.0f}; stopping", file=sys.stderr)
        _thread.interrupt_main()

    timer = threading.Timer(limit_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validators", default="1,4", help="comma-separated counts (default 1,4)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the window")
    ap.add_argument("--duration", type=float, default=20.0, help="measurement window seconds")
    ap.add_argument("--spread", action="store_true",
                    help="client i sends to node i mod N (default: every client to node 0)")
    ap.add_argument("--max-rate", type=float, default=6000.0,
                    help="tx/s the pre-built txs must sustain (default 6000; each client gets "
                         "max-rate*(warmup+duration+10)/clients txs)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="kvstore/dlbc pairs per validator count, in ABBA order; the ratio is "
                         "of the medians (default 1; 2 or more on a shared, noisy machine)")
    ap.add_argument("--apps", default=",".join(APPS),
                    help=f"sides to run, of {', '.join(APPS)} (default all; kvstore and dlbc "
                         "are always run: the ratio is theirs)")
    ap.add_argument("--cometbft", default=None, help="binary (default: pinned v0.38 build)")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the temporary homes")
    ap.add_argument("--keep", action="store_true", help="keep the homes (logs) afterwards")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="hard bound on the whole run (default: 120 s + 150 s per localnet "
                         "+ the windows)")
    args = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    # bench/training.py would shadow the `training` package that the dlbc CLI imports
    sys.path[:] = [p for p in sys.path if (p and str(Path(p).resolve())) != here]
    counts = [int(x) for x in args.validators.split(",") if x.strip()]
    wanted = {a.strip() for a in args.apps.split(",") if a.strip()} | {"kvstore", "dlbc"}
    if wanted - set(APPS):
        print(f"error: unknown --apps {sorted(wanted - set(APPS))}; choose from {APPS}",
              file=sys.stderr)
        return 2
    apps = tuple(a for a in APPS if a in wanted)
    cometbft = args.cometbft or str(pinned_line("0.38") or find_cometbft() or "")
    if not cometbft or not Path(cometbft).exists() and shutil.which(cometbft) is None:
        print("error: no cometbft binary (make tools, or --cometbft PATH)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    runs = len(apps) * args.rounds * len(counts)
    timer = watchdog(args.max_seconds or 120 + runs * (150 + args.warmup + args.duration))
    workdir = Path(tempfile.mkdtemp(prefix="cbt-", dir=args.workdir))
    try:
        version = subprocess.run([cometbft, "version"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout.strip()
        print(f"CometBFT {version} ({cometbft}); {args.clients} clients -> "
              f"{'node i mod N' if args.spread else 'node 0'}, broadcast_tx_sync; warm-up "
              f"{args.warmup:g}s, window {args.duration:g}s; {os.cpu_count()} CPU(s)")
        accounts = [client_address(i) for i in range(args.clients)]
        for line in config_summary(cometbft, workdir, accounts):
            print(line)
        per_client = math.ceil(args.max_rate * (args.warmup + args.duration + 10) / args.clients)
        t = time.monotonic()
        with concurrent.futures.ProcessPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
            dlbc_txs = list(pool.map(sign_transfers, range(args.clients),
                                     [per_client] * args.clients, [CHAIN_ID] * args.clients))
        size = len(dlbc_txs[0][-1])
        print(f"built {args.clients} x {per_client} signed DLBC Transfers ({size} bytes) in "
              f"{time.monotonic() - t:.1f}s; kvstore txs are unique key=value of {size} bytes")
        sys.stdout.flush()
        ratios: list[tuple[int, float]] = []
        verify_us = verify_cost_us(dlbc_txs[0][:2000])
        print(f"one ed25519 verification by the chain's rule (abci_app/dlbc/crypto.py, "
              f"{ED25519_BACKEND}), timed here: {verify_us:.1f} us of CPU")
        for n in counts:
            kv = [kv_txs(i, per_client, size, f"v{n}") for i in range(args.clients)]
            loads = {"kvstore": kv, "pykv": kv, "dlbc": dlbc_txs}
            results: dict[str, list[Result]] = {app: [] for app in apps}
            for rnd in range(args.rounds):
                # ABBA order over rounds: a background load that drifts hits every side alike
                for app in apps if rnd % 2 == 0 else apps[::-1]:
                    r = run_one(app, n, args, cometbft, loads[app], accounts, workdir, f"r{rnd}")
                    print(fmt_result(r))
                    sys.stdout.flush()
                    results[app].append(r)
            rate = {app: statistics.median(r.rate for r in rs) for app, rs in results.items()}
            p50 = {app: statistics.median(r.p50 for r in rs) for app, rs in results.items()}
            ratio = rate["dlbc"] / rate["kvstore"] if rate["kvstore"] else 0.0
            ratios.append((n, ratio))
            what = "" if args.rounds == 1 else f" (median of {args.rounds} alternating rounds)"
            print(f"  {plural(n)}{what}: dlbc {rate['dlbc']:.1f} tx/s vs kvstore "
                  f"{rate['kvstore']:.1f} tx/s; latency p50 dlbc {p50['dlbc'] * 1000:.0f} ms vs "
                  f"kvstore {p50['kvstore'] * 1000:.0f} ms (goal ratio >= 0.90)")
            for line in cpu_report(n, results, rate, os.cpu_count() or 1, verify_us):
                print(line)
            sys.stdout.flush()
        for n, ratio in ratios:
            print(f"ratio dlbc/kvstore committed tx/s: {ratio:.2f} ({plural(n)})")
        return 0
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"interrupted ({type(exc).__name__} {exc}); every started process was stopped",
              file=sys.stderr)
        return 130
    finally:
        timer.cancel()
        if args.keep:
            print(f"homes kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
