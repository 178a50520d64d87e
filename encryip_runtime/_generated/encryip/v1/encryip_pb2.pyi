from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model_name", "input", "return_onehot", "request_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    RETURN_ONEHOT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    input: Tensor
    return_onehot: bool
    request_id: str
    def __init__(self, model_name: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., return_onehot: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model_name", "ciphertexts", "onehot", "manifest_digest", "request_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    ONEHOT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    onehot: Tensor
    manifest_digest: str
    request_id: str
    def __init__(self, model_name: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., onehot: _Optional[_Union[Tensor, _Mapping]] = ..., manifest_digest: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("g1", "g2", "h")
    G1_FIELD_NUMBER: _ClassVar[int]
    G2_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    g1: str
    g2: str
    h: str
    def __init__(self, g1: _Optional[str] = ..., g2: _Optional[str] = ..., h: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_name", "profile", "group", "pk", "num_classes", "class_names", "input", "manifest_digest", "ciphertext_size", "onehot_size", "runtime_version", "crypto_backend")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PK_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ONEHOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    CRYPTO_BACKEND_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    profile: str
    group: str
    pk: PublicKey
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input: TensorSpec
    manifest_digest: str
    ciphertext_size: int
    onehot_size: int
    runtime_version: str
    crypto_backend: str
    def __init__(self, model_name: _Optional[str] = ..., profile: _Optional[str] = ..., group: _Optional[str] = ..., pk: _Optional[_Union[PublicKey, _Mapping]] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., input: _Optional[_Union[TensorSpec, _Mapping]] = ..., manifest_digest: _Optional[str] = ..., ciphertext_size: _Optional[int] = ..., onehot_size: _Optional[int] = ..., runtime_version: _Optional[str] = ..., crypto_backend: _Optional[str] = ...) -> None: ...
