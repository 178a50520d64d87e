"""``inference.GRPCInferenceService`` (Open Inference Protocol v2): protobuf <-> domain only.

Outputs and metadata are decided in ``oip.py`` (shared with the REST front end). A request
that sends its input in ``raw_input_contents`` (as tritonclient does) gets
``raw_output_contents`` back; one that uses typed ``contents`` gets typed contents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.exceptions import InputError
from encryip_runtime.server.health import HealthState
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.model_store import LoadedModel
from encryip_runtime.server.oip import (
    CIPHERTEXT_OUTPUT,
    ONEHOT_OUTPUT,
    check_outputs,
    model_metadata,
    server_metadata,
)
from encryip_runtime.server.predictor import Predictor
from encryip_runtime.server.status import grpc_method
from encryip_runtime.server.tensors import decode_tensor, dtype_from_kserve, pack_bytes_elements

__all__ = ["CIPHERTEXT_OUTPUT", "ONEHOT_OUTPUT", "InferenceServicer"]

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
    def __init__(
        self,
        predictor: Predictor,
        metrics: ServerMetrics,
        health: HealthState,
        extensions: Sequence[str] = (),
    ) -> None:
        self._predictor = predictor
        self._extensions = list(extensions)
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
        return pb.ServerReadyResponse(ready=self._health.serving and self._predictor.ready())

    @grpc_method("inference.GRPCInferenceService/ModelReady")
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        ready = self._health.serving and self._predictor.ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @grpc_method("inference.GRPCInferenceService/ServerMetadata")
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata(self._extensions))

    @grpc_method("inference.GRPCInferenceService/ModelMetadata")
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        loaded = self._predictor.resolve(request.name, request.version)
        meta = model_metadata(loaded, self._predictor.versions(loaded.name))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    # -- model repository extension -------------------------------------------------

    @grpc_method("inference.GRPCInferenceService/RepositoryIndex")
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse.ModelIndex
        rows = self._predictor.repository.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[index(name=r.name, version=r.version, state=r.state, reason=r.reason)
                    for r in rows]
        )  # fmt: skip

    @grpc_method("inference.GRPCInferenceService/RepositoryModelLoad")
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryModelLoadResponse:
        # Loading reads and checks files and builds an onnxruntime session: off the loop.
        await asyncio.to_thread(self._predictor.repository.load, request.model_name)
        return pb.RepositoryModelLoadResponse()

    @grpc_method("inference.GRPCInferenceService/RepositoryModelUnload")
    async def RepositoryModelUnload(
        self,
        request: pb.RepositoryModelUnloadRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.RepositoryModelUnloadResponse:
        # Unloading waits for the model's queued requests: off the loop, which answers them.
        await asyncio.to_thread(self._predictor.repository.unload, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference -------------------------------------------------------------------

    @grpc_method("inference.GRPCInferenceService/ModelInfer")
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        loaded = self._predictor.resolve(request.model_name, request.model_version)
        x, raw = _input_array(request, loaded)
        wanted = check_outputs(loaded, [o.name for o in request.outputs])
        pred = await self._predictor.predict(
            loaded,
            x,
            onehot=ONEHOT_OUTPUT in wanted,
            timeout_s=context.time_remaining(),
        )
        response = pb.ModelInferResponse(
            model_name=pred.model.name, model_version=pred.model.version, id=request.id
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
