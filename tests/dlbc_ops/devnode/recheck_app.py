"""A kvstore variant whose CheckTx depends on committed state: a key may be written only once.

Used to show the dev node's recheck: two txs for the same key both pass CheckTx while the key is
unset; after the block that commits the first, RECHECK rejects the second and the node drops it.
Served by the real `python -m abci_app --app tests.dlbc_ops.devnode.recheck_app:WriteOnceKV`.
"""

from __future__ import annotations

from abci_app.kvstore import CODE_OK, InvalidTx, KVStoreApplication, parse_tx
from abci_app.pb.tendermint.abci import types_pb2 as abci

CODE_KEY_TAKEN = 9


class WriteOnceKV(KVStoreApplication):
    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        try:
            key, _ = parse_tx(req.tx)
        except InvalidTx as exc:
            return abci.ResponseCheckTx(code=exc.code, log=exc.log)
        if self.store.get(b"kv/" + key) is not None:
            return abci.ResponseCheckTx(code=CODE_KEY_TAKEN, log=f"key {key!r} already written")
        return abci.ResponseCheckTx(code=CODE_OK, data=b"\x01\xab")  # shows the RPC's data encoding
