from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(_message.Message):
    __slots__ = ("miner", "model_digest", "watermark_ok", "score_ppm", "trajectory_failed")
    MINER_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_OK_FIELD_NUMBER: _ClassVar[int]
    SCORE_PPM_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_FAILED_FIELD_NUMBER: _ClassVar[int]
    miner: bytes
    model_digest: bytes
    watermark_ok: bool
    score_ppm: int
    trajectory_failed: bool
    def __init__(self, miner: _Optional[bytes] = ..., model_digest: _Optional[bytes] = ..., watermark_ok: _Optional[bool] = ..., score_ppm: _Optional[int] = ..., trajectory_failed: _Optional[bool] = ...) -> None: ...

class VerdictSet(_message.Message):
    __slots__ = ("round", "verdicts", "complete", "test_set_unusable")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    TEST_SET_UNUSABLE_FIELD_NUMBER: _ClassVar[int]
    round: int
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    complete: bool
    test_set_unusable: bool
    def __init__(self, round: _Optional[int] = ..., verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ..., complete: _Optional[bool] = ..., test_set_unusable: _Optional[bool] = ...) -> None: ...
