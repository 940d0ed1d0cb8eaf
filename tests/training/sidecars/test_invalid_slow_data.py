"""A publisher whose server drips the training data (issue 13 "Fetching from strangers"): the
miner's download aborts on the minimum rate instead of spending the whole TRAIN phase on it,
the fault is logged and counted, nothing is committed, and the miner keeps following the chain."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.sidecars.task_prep import prepare_demo_task

from .helpers import MINER_START, TINY_TASK, key, local_chain, wait_for

# TRAIN long enough that a download bounded only by the phase would still be running when the
# test checks; "direct": TINY_TASK's 8-wide U-Net cannot hold the default "diff" (2 x 256).
PARAMS = {"train_seconds": 40, "reveal_seconds": 2, "verify_seconds": 2,
          "watermark_matrix": "direct"}


class DripServer:
    """Serves the files under `root` with their true Content-Length, one byte every 0.2 s."""

    def __init__(self, root: Path) -> None:
        self.stop = threading.Event()
        self.aborted = threading.Event()  # a client hung up mid-drip
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = root / self.path.lstrip("/")
                if ".." in self.path or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for i in range(len(data)):
                        if outer.stop.wait(0.2):
                            return
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                except OSError:
                    outer.aborted.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def test_invalid_training_data_served_as_a_slow_drip(tmp_path: Path) -> None:
    pub_key, miner_key = key(33), key(34)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={pub_key.address.hex(): 100_000,
                               miner_key.address.hex(): MINER_START}) as chain:
        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                        workdir=tmp_path / "pub", poll_seconds=0.2,
                                        reward=10_000), pub_key)
        drip = DripServer(pub.artifact_root)
        miner = Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                  workdir=tmp_path / "miner", poll_seconds=0.2, progress=False),
                      miner_key)
        # the spec names the drip server: what a hostile publisher's URIs would do
        pub.add_prepared(prepare_demo_task(pub.artifact_root / "demo", drip.url,
                                           DemoDataConfig(**TINY_TASK), "demo",
                                           pub.chain_scheme()))
        threads = [threading.Thread(target=s.run, daemon=True) for s in (miner, pub)]
        for t in threads:
            t.start()
        try:
            t0 = time.monotonic()
            wait_for(lambda: miner.metrics.get("errors_total", kind="data") >= 1, 30,
                     "the miner to give up on the dripping data")
            gave_up_after = time.monotonic() - t0
            assert drip.aborted.wait(5), "the miner's download was not closed"
            rec = chain.rpc.query_json("rounds/1")
            assert rec["phase"] == "TRAIN"  # it gave up well before the phase ended
            assert all(t.is_alive() for t in threads)
        finally:
            for s in (miner, pub):
                s.stop()
            for t in threads:
                t.join(timeout=15)
            drip.close()
    assert gave_up_after < 25
    assert miner.metrics.get("commits_total") == 0
    assert miner.metrics.get("training_seconds_total") == 0
    assert not list((tmp_path / "miner").glob("round-*"))  # no partial download left behind
