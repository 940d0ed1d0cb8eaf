"""Why an artifact (a model, a data set, a download) must not be used: one exception per reason.

They live apart from `training.artifacts` so that the fetching modules below it can raise them
without importing it (docs/artifacts.md). Every message says what was wrong with *the artifact
or its URI*, never anything about this machine, because a verifier's verdict carries it on
chain for the party that named the URI to read.
"""

from __future__ import annotations


class ArtifactError(ValueError):
    """An artifact that must not be used; the message says why."""


class DigestMismatch(ArtifactError):
    """The bytes are not the ones the chain committed to."""


class TooLarge(ArtifactError):
    """More bytes than the cap (declared, streamed, or once decoded)."""


class NotSafetensors(ArtifactError):
    """A model file that is not a well-formed safetensors file of the expected architecture."""


class AddressRefused(ArtifactError):
    """The URI's host is, resolves to, or redirects to a non-public address (loopback, private,
    link-local, metadata, ...) and the operator did not allow private networks."""


class TooSlow(ArtifactError):
    """The transfer fell below the minimum rate or ran past its deadline."""
