"""gRPC server reflection, both versions: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection (1.85) ships only v1alpha; grpcurl, Postman and newer clients ask for
v1 first. The two protocols' messages are wire-identical (only the package differs), so
the v1 servicer re-reads each v1 request as v1alpha, lets grpcio-reflection's own
servicer answer it, and re-reads the answer as v1: one implementation, two names.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection as reflection_v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from encryip_runtime._generated.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from encryip_runtime._generated.grpc.reflection.v1 import reflection_pb2_grpc as v1_pb2_grpc

__all__ = ["SERVICE_NAMES", "enable_reflection"]

#: Both reflection services, as they appear in ``list_services``.
SERVICE_NAMES: tuple[str, str] = (
    v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
    reflection_v1alpha.SERVICE_NAME,
)


class ReflectionV1Servicer(v1_pb2_grpc.ServerReflectionServicer):
    """``grpc.reflection.v1.ServerReflection`` on top of grpcio-reflection's v1alpha."""

    def __init__(self, service_names: Iterable[str]) -> None:
        self._alpha = reflection_v1alpha.aio.ReflectionServicer(tuple(service_names))

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[v1_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[v1_pb2.ServerReflectionResponse]:
        async def as_alpha() -> AsyncIterator[v1alpha_pb2.ServerReflectionRequest]:
            async for request in request_iterator:
                yield v1alpha_pb2.ServerReflectionRequest.FromString(request.SerializeToString())

        async for response in self._alpha.ServerReflectionInfo(as_alpha(), context):
            yield v1_pb2.ServerReflectionResponse.FromString(response.SerializeToString())


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Register reflection v1 and v1alpha on ``server``, listing ``service_names`` and both
    reflection services."""
    names = tuple(dict.fromkeys((*service_names, *SERVICE_NAMES)))
    reflection_v1alpha.enable_server_reflection(names, server)
    v1_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionV1Servicer(names), server)
