from abci_app.pb.tendermint.abci import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignedTx(_message.Message):
    __slots__ = ("body", "public_key", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    public_key: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TxBody(_message.Message):
    __slots__ = ("chain_id", "nonce", "transfer", "register_miner", "submit_task", "release_train_key", "commit_model", "reveal_test_set", "reveal_model", "settle", "unbond_miner")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    REGISTER_MINER_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TASK_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    COMMIT_MODEL_FIELD_NUMBER: _ClassVar[int]
    REVEAL_TEST_SET_FIELD_NUMBER: _ClassVar[int]
    REVEAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FIELD_NUMBER: _ClassVar[int]
    UNBOND_MINER_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    nonce: int
    transfer: Transfer
    register_miner: RegisterMiner
    submit_task: SubmitTask
    release_train_key: ReleaseTrainKey
    commit_model: CommitModel
    reveal_test_set: RevealTestSet
    reveal_model: RevealModel
    settle: Settle
    unbond_miner: UnbondMiner
    def __init__(self, chain_id: _Optional[str] = ..., nonce: _Optional[int] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., register_miner: _Optional[_Union[RegisterMiner, _Mapping]] = ..., submit_task: _Optional[_Union[SubmitTask, _Mapping]] = ..., release_train_key: _Optional[_Union[ReleaseTrainKey, _Mapping]] = ..., commit_model: _Optional[_Union[CommitModel, _Mapping]] = ..., reveal_test_set: _Optional[_Union[RevealTestSet, _Mapping]] = ..., reveal_model: _Optional[_Union[RevealModel, _Mapping]] = ..., settle: _Optional[_Union[Settle, _Mapping]] = ..., unbond_miner: _Optional[_Union[UnbondMiner, _Mapping]] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("to", "amount")
    TO_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    to: bytes
    amount: int
    def __init__(self, to: _Optional[bytes] = ..., amount: _Optional[int] = ...) -> None: ...

class RegisterMiner(_message.Message):
    __slots__ = ("bandwidth_bps", "flops")
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    bandwidth_bps: int
    flops: int
    def __init__(self, bandwidth_bps: _Optional[int] = ..., flops: _Optional[int] = ...) -> None: ...

class UnbondMiner(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("architecture", "hyperparams_json", "model_size_bytes", "flops_per_sample", "data_uri", "data_size_bytes", "data_sha256", "data_key_sha256", "test_uri", "test_sha256", "test_key_sha256", "metric", "min_score_ppm", "input_shape", "num_classes", "num_samples")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLOPS_PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    DATA_URI_FIELD_NUMBER: _ClassVar[int]
    DATA_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    TEST_URI_FIELD_NUMBER: _ClassVar[int]
    TEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    TEST_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_PPM_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    hyperparams_json: str
    model_size_bytes: int
    flops_per_sample: int
    data_uri: str
    data_size_bytes: int
    data_sha256: bytes
    data_key_sha256: bytes
    test_uri: str
    test_sha256: bytes
    test_key_sha256: bytes
    metric: str
    min_score_ppm: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    num_samples: int
    def __init__(self, architecture: _Optional[str] = ..., hyperparams_json: _Optional[str] = ..., model_size_bytes: _Optional[int] = ..., flops_per_sample: _Optional[int] = ..., data_uri: _Optional[str] = ..., data_size_bytes: _Optional[int] = ..., data_sha256: _Optional[bytes] = ..., data_key_sha256: _Optional[bytes] = ..., test_uri: _Optional[str] = ..., test_sha256: _Optional[bytes] = ..., test_key_sha256: _Optional[bytes] = ..., metric: _Optional[str] = ..., min_score_ppm: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., num_samples: _Optional[int] = ...) -> None: ...

class SubmitTask(_message.Message):
    __slots__ = ("spec", "reward")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    spec: TaskSpec
    reward: int
    def __init__(self, spec: _Optional[_Union[TaskSpec, _Mapping]] = ..., reward: _Optional[int] = ...) -> None: ...

class ReleaseTrainKey(_message.Message):
    __slots__ = ("task_id", "key")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    key: bytes
    def __init__(self, task_id: _Optional[int] = ..., key: _Optional[bytes] = ...) -> None: ...

class CommitModel(_message.Message):
    __slots__ = ("round", "commitment")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    round: int
    commitment: bytes
    def __init__(self, round: _Optional[int] = ..., commitment: _Optional[bytes] = ...) -> None: ...

class RevealTestSet(_message.Message):
    __slots__ = ("task_id", "test_key")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_KEY_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    test_key: bytes
    def __init__(self, task_id: _Optional[int] = ..., test_key: _Optional[bytes] = ...) -> None: ...

class RevealModel(_message.Message):
    __slots__ = ("round", "model_uri", "model_digest", "salt", "claimed_score_ppm", "checkpoint_digests")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_SCORE_PPM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    round: int
    model_uri: str
    model_digest: bytes
    salt: bytes
    claimed_score_ppm: int
    checkpoint_digests: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, round: _Optional[int] = ..., model_uri: _Optional[str] = ..., model_digest: _Optional[bytes] = ..., salt: _Optional[bytes] = ..., claimed_score_ppm: _Optional[int] = ..., checkpoint_digests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Settle(_message.Message):
    __slots__ = ("round", "extended_commit")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EXTENDED_COMMIT_FIELD_NUMBER: _ClassVar[int]
    round: int
    extended_commit: _types_pb2.ExtendedCommitInfo
    def __init__(self, round: _Optional[int] = ..., extended_commit: _Optional[_Union[_types_pb2.ExtendedCommitInfo, _Mapping]] = ...) -> None: ...
