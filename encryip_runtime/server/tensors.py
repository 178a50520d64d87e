"""Raw tensor bytes <-> numpy, and the checks every request tensor passes.

Pure functions, no gRPC: both servicers call them, and the fuzz tests can too.
Every failure is an ``InputError`` whose message names the problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import InputError
from encryip_runtime.formats.manifest import InputSpec

__all__ = [
    "KSERVE_DATATYPES",
    "InputSpec",
    "check_input",
    "decode_tensor",
    "dtype_from_kserve",
    "dtype_from_name",
    "kserve_datatype",
    "pack_bytes_elements",
    "unpack_bytes_elements",
]

# Open Inference Protocol datatype <-> numpy dtype (little-endian on the wire).
KSERVE_DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_NUMPY_NAMES = frozenset(KSERVE_DATATYPES.values())
_MAX_DIMS = 8


def dtype_from_name(name: str) -> np.dtype[Any]:
    """A numpy dtype from its name ("uint8", "float32", ...); only plain numeric types."""
    if name not in _NUMPY_NAMES:
        raise InputError(
            f"unsupported dtype {name[:40]!r}: expected one of {', '.join(sorted(_NUMPY_NAMES))}"
        )
    return np.dtype(name).newbyteorder("<")


def dtype_from_kserve(datatype: str) -> np.dtype[Any]:
    if datatype == "BYTES":
        raise InputError("datatype 'BYTES' is not accepted for model inputs")
    name = KSERVE_DATATYPES.get(datatype)
    if name is None:
        raise InputError(
            f"unsupported datatype {datatype[:40]!r}: expected one of {', '.join(KSERVE_DATATYPES)}"
        )
    return np.dtype(name).newbyteorder("<")


def kserve_datatype(dtype: np.dtype[Any]) -> str:
    for k, v in KSERVE_DATATYPES.items():
        if np.dtype(v) == dtype:
            return k
    raise ValueError(f"no Open Inference Protocol datatype for {dtype}")


def decode_tensor(dtype: np.dtype[Any], shape: Sequence[int], data: bytes) -> npt.NDArray[Any]:
    """Bytes + dtype + shape -> a read-only array in native byte order; sizes checked."""
    dims = [int(d) for d in shape]
    if not dims:
        raise InputError("shape is empty: expected a batch dimension first")
    if len(dims) > _MAX_DIMS:
        raise InputError(f"shape has {len(dims)} dimensions: at most {_MAX_DIMS} are accepted")
    if any(d < 0 for d in dims):
        raise InputError(f"shape {dims} has a negative dimension")
    if dims[0] == 0:
        raise InputError("empty batch: the first dimension of the shape is 0")
    count = math.prod(dims)
    expected = count * dtype.itemsize
    if expected != len(data):
        raise InputError(
            f"byte count mismatch: shape {dims} of {dtype.name} needs {expected} bytes "
            f"({count} elements x {dtype.itemsize}), got {len(data)}"
        )
    try:
        arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    except ValueError:  # zero elements, but dimensions numpy cannot hold (int64 overflow)
        raise InputError(f"shape {dims} is not a valid array shape") from None
    if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def check_input(x: npt.NDArray[Any], spec: InputSpec) -> None:
    """The request path's one input check (the model does not check again): raise
    ``InputError`` unless ``x`` matches ``spec`` (the manifest's) and holds only finite
    values."""
    shape = spec.batch_shape
    if x.dtype.newbyteorder("=") != spec.np_dtype.newbyteorder("="):
        raise InputError(f"wrong dtype {x.dtype.name}: input '{spec.name}' takes {spec.describe()}")
    if x.ndim != len(shape):
        raise InputError(
            f"wrong shape {list(x.shape)}: input '{spec.name}' takes {spec.describe()} "
            f"({len(shape)} dimensions, got {x.ndim})"
        )
    for axis, (got, want) in enumerate(zip(x.shape, shape, strict=True)):
        if want is not None and got != want:
            raise InputError(
                f"wrong shape {list(x.shape)}: input '{spec.name}' takes {spec.describe()} "
                f"(dimension {axis} must be {want})"
            )
    if x.shape[0] == 0:
        raise InputError("empty batch: no rows")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputError(f"input holds {bad} NaN or infinite value(s)")


def pack_bytes_elements(items: Sequence[bytes]) -> bytes:
    """BYTES tensor raw layout: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(len(b).to_bytes(4, "little") + bytes(b) for b in items)


def unpack_bytes_elements(raw: bytes) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise InputError("BYTES tensor: truncated length prefix")
        n = int.from_bytes(raw[i : i + 4], "little")
        i += 4
        if i + n > len(raw):
            raise InputError("BYTES tensor: element runs past the end")
        out.append(bytes(raw[i : i + n]))
        i += n
    return out
