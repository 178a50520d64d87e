"""``encryip.v1.EncryIP``: protobuf <-> domain conversion only."""

from __future__ import annotations

from typing import Any

import grpc

from encryip_runtime import __version__
from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime.exceptions import InputError
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.model_store import LoadedModel
from encryip_runtime.server.predictor import Predictor
from encryip_runtime.server.status import grpc_method
from encryip_runtime.server.tensors import decode_tensor, dtype_from_name

__all__ = ["EncryIPServicer", "model_info"]


def model_info(loaded: LoadedModel) -> encryip_pb2.ModelInfo:
    g1, g2, h = loaded.pk
    return encryip_pb2.ModelInfo(
        model_name=loaded.name,
        profile=loaded.profile,
        group=loaded.group,
        pk=encryip_pb2.PublicKey(g1=g1, g2=g2, h=h),
        num_classes=loaded.num_classes,
        class_names=list(loaded.class_names),
        input=encryip_pb2.TensorSpec(
            name=loaded.spec.name,
            dtype=loaded.spec.dtype,
            shape=[-1 if d is None else d for d in loaded.spec.batch_shape],
        ),
        manifest_digest=loaded.digest,
        ciphertext_size=loaded.ciphertext_size,
        onehot_size=loaded.onehot_size,
        runtime_version=__version__,
        crypto_backend=loaded.crypto_backend,
    )


class EncryIPServicer(encryip_pb2_grpc.EncryIPServicer):
    def __init__(self, predictor: Predictor, metrics: ServerMetrics) -> None:
        self._predictor = predictor
        self._metrics = metrics

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._metrics.observe_request(method, code, seconds)

    @grpc_method("encryip.v1.EncryIP/Predict")
    async def Predict(
        self, request: encryip_pb2.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> encryip_pb2.PredictResponse:
        loaded = self._predictor.resolve(request.model_name)
        if not request.HasField("input"):
            raise InputError("missing input tensor")
        t = request.input
        x = decode_tensor(dtype_from_name(t.dtype), t.shape, t.data)
        pred = await self._predictor.predict(
            loaded,
            x,
            onehot=request.return_onehot,
            timeout_s=context.time_remaining(),
        )
        response = encryip_pb2.PredictResponse(
            model_name=pred.model.name,
            ciphertexts=[row.tobytes() for row in pred.wire],
            manifest_digest=pred.model.digest,
            request_id=request.request_id,
        )
        if pred.onehot is not None:
            onehot = pred.onehot.astype("<f4", copy=False)
            response.onehot.dtype = "float32"
            response.onehot.shape.extend(onehot.shape)
            response.onehot.data = onehot.tobytes()
        return response

    @grpc_method("encryip.v1.EncryIP/GetModelInfo")
    async def GetModelInfo(
        self, request: encryip_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> encryip_pb2.ModelInfo:
        return model_info(self._predictor.resolve(request.model_name))
