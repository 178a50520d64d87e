"""Transport security (TLS, mTLS) and bearer-token authentication of the main port.

Two token modes: one shared token (``--token-file``, :class:`TokenAuthInterceptor`), or
one token per licensee (``--tokens-file``, :class:`LicenseeAuthInterceptor`, which asks
the transport-neutral :class:`~encryip_runtime.server.licensees.LicenseeGate` who calls,
whether the call is within its limits, and counts it).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from encryip_runtime.exceptions import EncryIPError
from encryip_runtime.server.config import ServerConfig
from encryip_runtime.server.licensees import LicenseeGate
from encryip_runtime.server.status import UnauthenticatedError, abort, status_for

__all__ = ["LicenseeAuthInterceptor", "TokenAuthInterceptor", "server_credentials"]

log = logging.getLogger(__name__)

# Health stays reachable without a token (probes; it reveals nothing).
_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)


def server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials of the main port, requiring client certificates when a CA is set."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    root = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Require ``authorization: Bearer <token>`` metadata; compared in constant time."""

    def __init__(self, token: bytes) -> None:
        self._expected = b"Bearer " + token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method.startswith(_PUBLIC_PREFIXES):
            return await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode("utf-8", "replace") if isinstance(value, str) else value
                break
        if hmac.compare_digest(presented, self._expected):
            return await continuation(handler_call_details)
        reason = "missing bearer token" if not presented else "invalid bearer token"
        log.info("refused %s: %s", method, reason)
        return _deny_handler(await continuation(handler_call_details), UnauthenticatedError(reason))


# Prediction methods: the ones limits and usage apply to, and where their rows are.
_PREDICT_METHODS = {
    "/encryip.v1.EncryIP/Predict": lambda r: r.input.shape[0] if len(r.input.shape) else 0,
    "/inference.GRPCInferenceService/ModelInfer": lambda r: (
        r.inputs[0].shape[0] if len(r.inputs) and len(r.inputs[0].shape) else 0
    ),
}


class LicenseeAuthInterceptor(grpc.aio.ServerInterceptor):
    """Per-licensee bearer tokens (``--tokens-file``): authenticate every call but health;
    for predictions also check the licensee's rate and quota and count requests and rows."""

    def __init__(self, gate: LicenseeGate) -> None:
        self.gate = gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method.startswith(_PUBLIC_PREFIXES):
            return await continuation(handler_call_details)
        presented: str | bytes | None = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value
                break
        handler = await continuation(handler_call_details)
        try:
            licensee = self.gate.authenticate(presented)
        except UnauthenticatedError as exc:
            log.info("refused %s: %s", method, exc)
            return _deny_handler(handler, exc)
        rows_of = _PREDICT_METHODS.get(method)
        if handler is None or rows_of is None or handler.unary_unary is None:
            return handler
        return _counted_handler(handler, self.gate, licensee, rows_of)


def _counted_handler(
    handler: grpc.RpcMethodHandler,
    gate: LicenseeGate,
    licensee: str,
    rows_of: Callable[[Any], int],
) -> grpc.RpcMethodHandler:
    """``handler`` behind the licensee's limits, counted in its usage."""
    inner = handler.unary_unary
    assert inner is not None

    async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        rows = int(rows_of(request))
        try:
            gate.admit(licensee, rows)
        except EncryIPError as exc:
            await abort(context, exc)
        try:
            response = await inner(request, context)
        except BaseException:
            gate.record(licensee, rows, ok=False)
            raise
        # A servicer that aborts raises; a returned response with a non-OK code is an error.
        code = context.code() if hasattr(context, "code") else None
        gate.record(licensee, rows, ok=code in (None, grpc.StatusCode.OK, 0))
        return response

    return grpc.unary_unary_rpc_method_handler(
        counted,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _deny_handler(
    handler: grpc.RpcMethodHandler | None, exc: Exception
) -> grpc.RpcMethodHandler | None:
    """A handler of the same streaming kind as ``handler`` that only aborts."""
    if handler is None:
        return None  # unknown method: grpc answers UNIMPLEMENTED
    code, message = status_for(exc)

    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)
