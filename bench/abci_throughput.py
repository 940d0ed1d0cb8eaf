"""CheckTx round trips per second through the real ABCI socket, against an Echo ceiling.

Issue 2 goal: >= 5,000 CheckTx/s on one core and >= 50% of the echo ceiling, for a signed
no-op tx whose ed25519 signature the app verifies in CheckTx (kvstore signed tx).

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


def _verify_bound(txs: list[bytes]) -> float:
    """Signature verifications per second with no socket at all: the ceiling for signed CheckTx."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from abci_app.kvstore import SIGN_DOMAIN

    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for tx in txs:
            Ed25519PublicKey.from_public_bytes(tx[1:33]).verify(tx[33:97], SIGN_DOMAIN + tx[97:])
        best = max(best, len(txs) / (time.perf_counter() - t0))
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
            if args.app == "dlbc":  # nonces cannot repeat: one pass over distinct txs
                check_rate = run_batches(sock, check_frames, args.batch, "check_tx")
                plain_rate = 0.0
            else:
                check_rate = max(run_batches(sock, check_frames, args.batch, "check_tx")
                                 for _ in range(args.rounds))
                plain_rate = max(run_batches(sock, plain_frames, args.batch, "check_tx")
                                 for _ in range(args.rounds))
            sock.close()
        finally:
            server.terminate()
            server.wait(10)

    verify_rate = _verify_bound(txs)
    ratio = check_rate / echo_rate
    print(f"ABCI socket throughput ({args.requests} requests, {args.batch} per Flush, best of "
          f"{args.rounds}; {pinned})")
    print(f"  echo ceiling (answered by the server): {echo_rate:>10,.0f} req/s")
    print(f"  CheckTx, {args.app} signed tx (ed25519):{check_rate:>10,.0f} req/s")
    print(f"  ratio CheckTx / echo ceiling:          {ratio:>10.1%}")
    if plain_rate:
        print(f"  CheckTx, unsigned tx (no crypto):      {plain_rate:>10,.0f} req/s  "
              f"({plain_rate / echo_rate:.1%} of ceiling: framing + dispatch + app call)")
    print(f"  bare ed25519 verify, in-process:       {verify_rate:>10,.0f} /s     "
          f"(CheckTx reaches {check_rate / verify_rate:.1%} of this crypto bound)")
    print(f"  goal >= 5,000 CheckTx/s: {'met' if check_rate >= 5000 else 'NOT met'}; "
          f"goal >= 50% of ceiling: {'met' if ratio >= 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
