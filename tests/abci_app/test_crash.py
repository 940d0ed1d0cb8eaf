"""kill -9 inside FinalizeBlock / Commit, restart, and the handshake resumes to the same hashes.

docs/determinism.md / issue 2: a crash at any point loses nothing committed and never leaves a
half-applied block. The app is a real `python -m abci_app` process told (by a test-only env
var) to hang inside the chosen call at height 6; we SIGKILL it there.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from abci_app.abci_client import AbciClient
from abci_app.kvstore import KVStoreApplication
from abci_app.pb.tendermint.abci import types_pb2 as abci
from dlbc_ops.devnode.driver import Driver
from dlbc_ops.devnode.validator_key import ValidatorKey

from .helpers import HANG_AT, app_supervisor, block_time, running, spawn_app, txs_for

CHAIN = "crash-test"
CRASH_HEIGHT = 6
LAST_HEIGHT = 10
KEYS = [ValidatorKey.generate(b"crash-%d" % i) for i in range(2)]


def _reference_hashes(tmp_path: Path) -> dict[int, bytes]:
    """App hash per height of an uninterrupted run (in-process apps, same blocks)."""
    with running(KVStoreApplication(tmp_path / "ref0")) as s0, \
            running(KVStoreApplication(tmp_path / "ref1")) as s1:
        async def main() -> dict[int, bytes]:
            d = Driver([AbciClient(s0.server.listen_address), AbciClient(s1.server.listen_address)],
                       KEYS, CHAIN)
            await d.handshake()
            out = {}
            for h in range(1, LAST_HEIGHT + 1):
                out[h] = (await d.run_height(txs_for(h), block_time(h))).app_hash
            await d.close()
            return out

        return asyncio.run(main())


@pytest.mark.parametrize("phase", ["finalize", "commit", "commit_after"])
def test_kill_9_inside_call_then_restart_resumes_to_same_hashes(tmp_path: Path, phase: str) -> None:
    reference = _reference_hashes(tmp_path)
    addrs = [f"unix://{tmp_path}/c{i}.sock" for i in range(2)]
    homes = [tmp_path / f"home{i}" for i in range(2)]
    blocks = tmp_path / "blocks"
    sup = app_supervisor(tmp_path)
    victim = spawn_app(sup, homes[0], addrs[0], env={HANG_AT: f"{phase}:{CRASH_HEIGHT}"})
    spawn_app(sup, homes[1], addrs[1])
    try:
        async def crash_part() -> None:
            d = Driver([AbciClient(a) for a in addrs], KEYS, CHAIN, block_store_dir=blocks)
            await d.handshake()
            for h in range(1, CRASH_HEIGHT):
                assert (await d.run_height(txs_for(h), block_time(h))).app_hash == reference[h]
            task = asyncio.ensure_future(d.run_height(txs_for(CRASH_HEIGHT), block_time(CRASH_HEIGHT)))
            marker = homes[0] / "HANGING"
            for _ in range(600):  # until the victim is inside the call (<= 30 s on a busy box)
                if marker.exists():
                    break
                await asyncio.sleep(0.05)
            assert marker.read_text() == f"{phase}:{CRASH_HEIGHT}\n"
            assert not task.done(), "the victim should be hanging inside the call"
            sup.kill(homes[0].name, signal.SIGKILL)  # kill -9 while inside FinalizeBlock/Commit
            with pytest.raises(Exception):  # noqa: B017 - connection loss surfaces as an error
                await task
            await d.close()

        asyncio.run(crash_part())
        assert victim.popen.returncode == -signal.SIGKILL

        (homes[0] / "HANGING").unlink()
        spawn_app(sup, homes[0], addrs[0])  # a restart: same name, same home

        async def resume_part() -> None:
            probe = AbciClient(addrs[0])
            await probe.connect()
            info = await probe.call("info", abci.RequestInfo(abci_version="2.0.0"))
            await probe.close()
            # Committed state is exactly a whole block: never half of height 6.
            expected = CRASH_HEIGHT if phase == "commit_after" else CRASH_HEIGHT - 1
            assert info.last_block_height == expected
            assert info.last_block_app_hash == reference[expected]

            d = Driver([AbciClient(a) for a in addrs], KEYS, CHAIN, block_store_dir=blocks)
            assert await d.handshake() == CRASH_HEIGHT
            # The replayed FinalizeBlock responses are exposed, not thrown away (issue 8).
            replayed_apps = {r.replayed_app for r in d.replayed}
            if phase == "commit_after":
                assert d.replayed == []  # both apps had committed height 6
            else:
                assert 0 in replayed_apps and replayed_apps <= {0, 1}
            for r in d.replayed:
                assert (r.height, r.txs, r.app_hashes) == \
                    (CRASH_HEIGHT, txs_for(CRASH_HEIGHT)[:2], [reference[CRASH_HEIGHT]])
                assert [t.code for t in r.tx_results[0]] == [0, 0]
            # Whatever the crash point, the height's real results are in the block store.
            stored = d.stored_result(CRASH_HEIGHT)
            assert stored is not None and stored.app_hash == reference[CRASH_HEIGHT]
            assert [t.code for t in stored.tx_results[0]] == [0, 0]
            assert stored.txs == txs_for(CRASH_HEIGHT)[:2] and stored.proposer in (0, 1)
            for i, c in enumerate(d.clients):
                inf = await c.call("info", abci.RequestInfo())
                assert (inf.last_block_height, inf.last_block_app_hash) == \
                    (CRASH_HEIGHT, reference[CRASH_HEIGHT]), f"app {i}"
            for h in range(CRASH_HEIGHT + 1, LAST_HEIGHT + 1):
                res = await d.run_height(txs_for(h), block_time(h))
                assert res.app_hashes == [reference[h]] * 2
            await d.close()

        asyncio.run(resume_part())
    finally:
        sup.stop()
