"""Generated protobuf package (see abci_app/proto/gen.py)."""
