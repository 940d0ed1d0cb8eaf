"""Protobuf sources (.proto) for the ABCI wire and the project's own messages; see gen.py."""
