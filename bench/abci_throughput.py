"""CheckTx round trips per second through the real ABCI socket, against an Echo ceiling.

Issue 2 goal: >= 5,000 CheckTx/s on one core and >= 50% of the echo ceiling, for a signed
no-op tx whose ed25519 signature the app verifies in CheckTx (kvstore signed tx), and for the
DLBC SignedTx (`--app dlbc`: a Transfer; every CheckTx a distinct tx, so no cache helps).

Besides wall-clock rates it reads the server process's own CPU time from /proc, so the
per-CheckTx CPU cost can be compared with the cost of one bare ed25519 verify on a shared,
oversubscribed machine, and it prints the arithmetic that bounds the echo ratio: one ed25519
verify per CheckTx costs far more than a whole echo round trip, so ">= 50% of echo" is out of
reach for any app that verifies a signature in CheckTx on one core.

Both numbers come from the same run, same server process, same client: the server is a real
`python -m abci_app --app kvstore` process (pinned to one CPU when the OS allows); the client
pipelines requests as CometBFT's mempool does (a batch of requests, then one Flush) and waits
for every response. The ceiling is Echo requests, which our server answers itself without
calling the app, so the ratio isolates the cost of the app call + signature verification.

Run: .venv/bin/python bench/abci_throughput.py [--requests 20000] [--batch 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from abci_app.codec import FrameDecoder, encode_frame
from abci_app.kvstore import sign_tx
from abci_app.pb.tendermint.abci import types_pb2 as abci

FLUSH = encode_frame(abci.Request(flush=abci.RequestFlush()).SerializeToString())


def _connect(path: str, timeout: float = 30.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stat_cpu(path: Path) -> float:
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(whole process, main thread) utime + stime of process `pid` from Linux /proc, or None
    where unavailable. The main thread runs the event loop, which also calls the app inline
    (abci_app/server.py); other threads are the runtime's own."""
    try:
        return _stat_cpu(Path(f"/proc/{pid}/stat")), _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))
    except (OSError, IndexError, ValueError):
        return None


def run_batches(sock: socket.socket, frames: list[bytes], batch: int, kind: str) -> float:
    """Send `frames` in pipelined batches (+Flush each); return requests/second."""
    dec = FrameDecoder()
    t0 = time.perf_counter()
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        sock.sendall(b"".join(chunk) + FLUSH)
        want = len(chunk) + 1
        got: list[bytes] = []
        while len(got) < want:
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("server closed the connection")
            got += dec.feed(data)
        # Check every answer: right kind, accepted (a bench that measures errors is worthless).
        resp = abci.Response()
        for raw in got[:-1]:
            resp.ParseFromString(raw)
            if resp.WhichOneof("value") != kind:
                raise RuntimeError(f"expected {kind}, got {resp.WhichOneof('value')}")
            if kind == "check_tx" and resp.check_tx.code != 0:
                raise RuntimeError(f"CheckTx rejected a valid tx: {resp.check_tx.log}")
    return len(frames) / (time.perf_counter() - t0)


def _dlbc_setup(sock: socket.socket, key: Ed25519PrivateKey, n: int) -> list[bytes]:
    """InitChain a fresh DLBC app with one funded account; return n Transfer txs (nonce 0..n-1)."""
    import json

    from abci_app.dlbc.crypto import address_of, public_key_bytes
    from abci_app.dlbc.txs import build_signed_tx, transfer

    chain_id = "bench-chain"
    me = address_of(public_key_bytes(key))
    app_state = {"accounts": [{"address": me.hex(), "balance": 10**15}]}
    init = abci.Request(init_chain=abci.RequestInitChain(
        chain_id=chain_id, app_state_bytes=json.dumps(app_state).encode(), initial_height=1))
    sock.sendall(encode_frame(init.SerializeToString()) + FLUSH)
    dec = FrameDecoder()
    got: list[bytes] = []
    while len(got) < 2:
        got += dec.feed(sock.recv(1 << 16))
    other = b"\x42" * 20
    return [build_signed_tx(key, chain_id, i, transfer(other, 1)) for i in range(n)]


def _verify_bound(txs: list[bytes]) -> tuple[float, float]:
    """Bare kvstore-tx signature verifications per second, (wall, cpu), no socket at all: the
    ceiling for a CheckTx that verifies one ed25519 signature."""
    from abci_app.dlbc.crypto import verify_ed25519
    from abci_app.kvstore import SIGN_DOMAIN

    best = (0.0, 0.0)
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        for tx in txs:
            if not verify_ed25519(tx[1:33], tx[33:97], SIGN_DOMAIN + tx[97:]):
                raise RuntimeError("bench tx does not verify")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = max(best, (len(txs) / wall, len(txs) / max(cpu, 1e-9)))
    return best


def _dlbc_verify_bound(txs: list[bytes], verify: Callable[[bytes, bytes, bytes], bool] | None = None
                       ) -> tuple[float, float]:
    """The same bound for DLBC SignedTx, through the app's own (uncached) verify function, or
    through `verify` (one backend alone, to compare them)."""
    from abci_app.dlbc.crypto import TX_SIGN_DOMAIN, verify_ed25519
    from abci_app.pb.dlbc.v1 import tx_pb2

    fn = verify or verify_ed25519
    signed = [tx_pb2.SignedTx.FromString(tx) for tx in txs]
    best = (0.0, 0.0)
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        for st in signed:
            if not fn(st.public_key, st.signature, TX_SIGN_DOMAIN + st.body):
                raise RuntimeError("bench tx does not verify")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = max(best, (len(signed) / wall, len(signed) / max(cpu, 1e-9)))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=200, help="requests per Flush")
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds per kind")
    ap.add_argument("--app", choices=("kvstore", "dlbc"), default="kvstore",
                    help="kvstore signed tx, or the DLBC SignedTx (Transfer, distinct nonces)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sock_path = str(Path(tmp) / "bench.sock")
        cmd = [sys.executable, "-m", "abci_app", "--home", str(Path(tmp) / "home"),
               "--address", f"unix://{sock_path}", "--app", args.app, "--log-level", "warning"]
        server = subprocess.Popen(cmd)
        try:
            if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
                os.sched_setaffinity(server.pid, {0})  # the app gets exactly one core
                os.sched_setaffinity(0, {1})  # the client gets another
                pinned = "server pinned to CPU 0, client to CPU 1"
            else:
                pinned = "not pinned (single CPU or no affinity support)"
            sock = _connect(sock_path)
            keys = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(16)]
            n_distinct = min(args.requests, 2_000)
            txs = [sign_tx(keys[i % 16], b"noop%d=" % i) for i in range(n_distinct)]
            if args.app == "dlbc":
                # Every CheckTx is a distinct tx (nonce i), so no signature cache can help.
                signed = _dlbc_setup(sock, keys[0], args.requests + 2000)
            else:
                signed = [txs[i % n_distinct] for i in range(args.requests + 2000)]
            check_frames = [
                encode_frame(abci.Request(check_tx=abci.RequestCheckTx(tx=tx)).SerializeToString())
                for tx in signed
            ]
            warm_check, check_frames = check_frames[:2000], check_frames[2000:]
            plain_frames = [
                encode_frame(abci.Request(check_tx=abci.RequestCheckTx(tx=b"noop%d=" % i))
                             .SerializeToString())
                for i in range(args.requests)
            ]
            echo_frames = [
                encode_frame(abci.Request(echo=abci.RequestEcho(message="x" * len(txs[0])))
                             .SerializeToString())
            ] * args.requests
            # Warm up both paths.
            run_batches(sock, echo_frames[:1000], args.batch, "echo")
            run_batches(sock, warm_check, args.batch, "check_tx")
            echo_rate = max(run_batches(sock, echo_frames, args.batch, "echo")
                            for _ in range(args.rounds))
            cpu0 = _proc_cpu_seconds(server.pid)
            if args.app == "dlbc":  # nonces cannot repeat: one pass over distinct txs
                check_rate = run_batches(sock, check_frames, args.batch, "check_tx")
                checks_done = len(check_frames)
                plain_rate = 0.0
            else:
                check_rate = max(run_batches(sock, check_frames, args.batch, "check_tx")
                                 for _ in range(args.rounds))
                checks_done = len(check_frames) * args.rounds
            cpu1 = _proc_cpu_seconds(server.pid)
            if args.app != "dlbc":
                plain_rate = max(run_batches(sock, plain_frames, args.batch, "check_tx")
                                 for _ in range(args.rounds))
            sock.close()
        finally:
            server.terminate()
            server.wait(10)

    if args.app == "dlbc":
        verify_rate, verify_cpu_rate = _dlbc_verify_bound(signed[:n_distinct])
    else:
        verify_rate, verify_cpu_rate = _verify_bound(txs)
    ratio = check_rate / echo_rate
    print(f"ABCI socket throughput ({args.requests} requests, {args.batch} per Flush, best of "
          f"{args.rounds}; {pinned})")
    print(f"  echo ceiling (answered by the server): {echo_rate:>10,.0f} req/s  "
          f"({1e6 / echo_rate:.1f} us per round trip)")
    print(f"  CheckTx, {args.app} signed tx (ed25519):{check_rate:>10,.0f} req/s  "
          f"({1e6 / check_rate:.1f} us wall each)")
    print(f"  ratio CheckTx / echo ceiling:          {ratio:>10.1%}")
    if plain_rate:
        print(f"  CheckTx, unsigned tx (no crypto):      {plain_rate:>10,.0f} req/s  "
              f"({plain_rate / echo_rate:.1%} of ceiling: framing + dispatch + app call)")
    print(f"  bare ed25519 verify, in-process:       {verify_rate:>10,.0f} /s     "
          f"(CheckTx reaches {check_rate / verify_rate:.1%} of this crypto bound, wall)")
    if args.app == "dlbc":
        from abci_app.dlbc import crypto

        backends = f"  ed25519 in the app: {crypto.ED25519_BACKEND}; one backend alone, cpu: " \
            f"OpenSSL {_dlbc_verify_bound(signed[:n_distinct], crypto.verify_openssl)[1]:,.0f}/s"
        if crypto.ED25519_BACKEND == "libsodium":
            backends += f", libsodium {_dlbc_verify_bound(signed[:n_distinct], crypto.verify_sodium)[1]:,.0f}/s"
        print(backends)
    verify_us = 1e6 / verify_cpu_rate
    if cpu0 is not None and cpu1 is not None and cpu1[0] > cpu0[0]:
        per_check_us = (cpu1[0] - cpu0[0]) / checks_done * 1e6
        loop_us = (cpu1[1] - cpu0[1]) / checks_done * 1e6
        print(f"  server CPU per CheckTx:                {per_check_us:>10.1f} us       "
              f"(= {1e6 / per_check_us:,.0f} CheckTx per CPU-second; main thread (event loop "
              f"+ app) {loop_us:.1f} us, other threads {per_check_us - loop_us:.1f} us; a bare "
              f"verify costs "
              f"{verify_us:.1f} us cpu, {verify_us / per_check_us:.0%} of the server's CPU)")
    best_possible = verify_cpu_rate / echo_rate
    print(f"  bound on the echo ratio with one verify per CheckTx: verify alone allows "
          f"{verify_cpu_rate:,.0f}/s = {best_possible:.1%} of the echo ceiling; 50% would need "
          f"the whole CheckTx in {2e6 / echo_rate:.1f} us, but one verify takes {verify_us:.1f} us")
    print(f"  goal >= 5,000 CheckTx/s: {'met' if check_rate >= 5000 else 'NOT met'}; "
          f"goal >= 50% of ceiling: {'met' if ratio >= 0.5 else 'NOT met'}"
          f"{'' if ratio >= 0.5 else ' (physically out of reach with one ed25519 verify per CheckTx on one core: see the bound above)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
