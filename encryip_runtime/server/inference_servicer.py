"""``inference.GRPCInferenceService`` (Open Inference Protocol v2): protobuf <-> domain only.

Outputs: ``ciphertext`` (BYTES ``[N]``, one wire ciphertext per row) and, in the paper
profile on request, ``onehot`` (FP32 ``[N, 3p]``). A request that sends its input in
``raw_input_contents`` (as tritonclient does) gets ``raw_output_contents`` back;
one that uses typed ``contents`` gets typed contents.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from encryip_runtime import __version__
from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.exceptions import InputError
from encryip_runtime.server.health import HealthState
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.model_store import LoadedModel
from encryip_runtime.server.predictor import Predictor
from encryip_runtime.server.status import grpc_method
from encryip_runtime.server.tensors import (
    decode_tensor,
    dtype_from_kserve,
    kserve_datatype,
    pack_bytes_elements,
)

__all__ = ["CIPHERTEXT_OUTPUT", "ONEHOT_OUTPUT", "InferenceServicer"]

CIPHERTEXT_OUTPUT = "ciphertext"
ONEHOT_OUTPUT = "onehot"
PLATFORM = "onnxruntime_onnx+encryip"
_VERSIONS = ("", "1")

# Which typed contents field carries each datatype (Open Inference Protocol).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, predictor: Predictor, metrics: ServerMetrics, health: HealthState) -> None:
        self._predictor = predictor
        self._metrics = metrics
        self._health = health

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._metrics.observe_request(method, code, seconds)

    # -- health and metadata ---------------------------------------------------------

    @grpc_method("inference.GRPCInferenceService/ServerLive")
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_method("inference.GRPCInferenceService/ServerReady")
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        ready = self._health.serving and self._predictor.store.current is not None
        return pb.ServerReadyResponse(ready=ready)

    @grpc_method("inference.GRPCInferenceService/ModelReady")
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        loaded = self._predictor.store.current
        ready = (
            self._health.serving
            and loaded is not None
            and request.name == loaded.name
            and request.version in _VERSIONS
        )
        return pb.ModelReadyResponse(ready=ready)

    @grpc_method("inference.GRPCInferenceService/ServerMetadata")
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="encryip", version=__version__, extensions=[])

    @grpc_method("inference.GRPCInferenceService/ModelMetadata")
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        loaded = self._resolve(request.name, request.version)
        outputs = [
            pb.ModelMetadataResponse.TensorMetadata(
                name=CIPHERTEXT_OUTPUT, datatype="BYTES", shape=[-1]
            )
        ]
        if loaded.onehot_size:
            outputs.append(
                pb.ModelMetadataResponse.TensorMetadata(
                    name=ONEHOT_OUTPUT, datatype="FP32", shape=[-1, loaded.onehot_size]
                )
            )
        return pb.ModelMetadataResponse(
            name=loaded.name,
            versions=["1"],
            platform=PLATFORM,
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=loaded.spec.name,
                    datatype=kserve_datatype(loaded.spec.dtype),
                    shape=[-1 if d is None else d for d in loaded.spec.shape],
                )
            ],
            outputs=outputs,
        )

    # -- inference -------------------------------------------------------------------

    @grpc_method("inference.GRPCInferenceService/ModelInfer")
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        loaded = self._resolve(request.model_name, request.model_version)
        x, raw = _input_array(request, loaded)
        wanted = [o.name for o in request.outputs] or [CIPHERTEXT_OUTPUT]
        for name in wanted:
            if name not in (CIPHERTEXT_OUTPUT, ONEHOT_OUTPUT) or (
                name == ONEHOT_OUTPUT and not loaded.onehot_size
            ):
                known = CIPHERTEXT_OUTPUT + (f", {ONEHOT_OUTPUT}" if loaded.onehot_size else "")
                raise InputError(f"unknown output {name[:64]!r}: model has {known}")
        pred = await self._predictor.predict(
            loaded,
            x,
            onehot=ONEHOT_OUTPUT in wanted,
            timeout_s=context.time_remaining(),
        )
        response = pb.ModelInferResponse(
            model_name=pred.model.name, model_version="1", id=request.id
        )
        for name in wanted:
            out = response.outputs.add(name=name)
            if name == CIPHERTEXT_OUTPUT:
                rows = [r.tobytes() for r in pred.wire]
                out.datatype = "BYTES"
                out.shape.append(len(rows))
                if raw:
                    response.raw_output_contents.append(pack_bytes_elements(rows))
                else:
                    out.contents.bytes_contents.extend(rows)
            else:
                assert pred.onehot is not None
                onehot = pred.onehot.astype("<f4", copy=False)
                out.datatype = "FP32"
                out.shape.extend(onehot.shape)
                if raw:
                    response.raw_output_contents.append(onehot.tobytes())
                else:
                    out.contents.fp32_contents.extend(onehot.reshape(-1).tolist())
        return response

    def _resolve(self, name: str, version: str) -> LoadedModel:
        loaded = self._predictor.resolve(name)
        if version not in _VERSIONS:
            raise InputError(f"unknown model version {version[:32]!r}: only version 1 exists")
        return loaded


def _input_array(
    request: pb.ModelInferRequest, loaded: LoadedModel
) -> tuple[npt.NDArray[Any], bool]:
    """The single input tensor as an array, and whether it came as raw contents."""
    if len(request.inputs) != 1:
        raise InputError(
            f"expected exactly 1 input tensor ({loaded.spec.name!r}), got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    if tensor.name != loaded.spec.name:
        raise InputError(f"unknown input {tensor.name[:64]!r}: model takes {loaded.spec.name!r}")
    dtype = dtype_from_kserve(tensor.datatype)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InputError(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input"
            )
        if tensor.HasField("contents"):
            raise InputError("input has both contents and raw_input_contents")
        return decode_tensor(dtype, tensor.shape, request.raw_input_contents[0]), True
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InputError(f"datatype {tensor.datatype!r} needs raw_input_contents")
    values = getattr(tensor.contents, field)
    try:
        data = np.asarray(values, dtype=dtype).tobytes()
    except (OverflowError, ValueError) as exc:
        raise InputError(f"input values do not fit {tensor.datatype}: {exc}") from None
    if tensor.datatype.startswith(("UINT", "INT")):
        # Typed contents are wider than the datatype: reject values that would wrap.
        info = np.iinfo(dtype)
        wide = np.asarray(values, dtype=np.int64 if field != "uint64_contents" else np.uint64)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InputError(f"input values out of range for {tensor.datatype}")
    return decode_tensor(dtype, tensor.shape, data), False
