"""Transport security (TLS, mTLS) and bearer-token authentication of the main and REST ports.

Two token modes. One shared token (``--token-file``): one ``BearerAuth`` decides for both
protocols; the gRPC interceptor hands it the ``authorization`` metadata, the REST front
end the ``Authorization`` header. One token per licensee (``--tokens-file``):
:class:`LicenseeAuthInterceptor` (gRPC) and the REST front end ask the transport-neutral
:class:`~encryip_runtime.server.licensees.LicenseeGate` who calls, whether the call is
within its limits, and count it.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from encryip_runtime.exceptions import EncryIPError
from encryip_runtime.server.config import ServerConfig
from encryip_runtime.server.licensees import LicenseeGate
from encryip_runtime.server.status import UnauthenticatedError, abort, status_for

__all__ = [
    "BearerAuth",
    "LicenseeAuthInterceptor",
    "TokenAuthInterceptor",
    "server_credentials",
    "server_ssl_context",
]

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


def server_ssl_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    """The same TLS / mTLS settings as :func:`server_credentials`, for the REST port."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    if cfg.tls_client_ca is not None:
        ctx.load_verify_locations(cafile=str(cfg.tls_client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class BearerAuth:
    """Checks an ``Authorization`` value against ``Bearer <token>`` in constant time."""

    def __init__(self, token: bytes) -> None:
        self._expected = b"Bearer " + token

    def check(self, presented: bytes) -> None:
        """Return if ``presented`` is the expected value; else ``UnauthenticatedError``."""
        if not hmac.compare_digest(presented, self._expected):
            reason = "missing bearer token" if not presented else "invalid bearer token"
            raise UnauthenticatedError(reason)


class _AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticate every call but health from its ``authorization`` metadata; a refused
    call gets a handler that only aborts (UNAUTHENTICATED)."""

    def _authenticate(self, presented: str | bytes | None) -> str | None:
        """Who presented it (None where callers are not told apart), or raise
        ``UnauthenticatedError``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _admitted(
        self, method: str, handler: grpc.RpcMethodHandler | None, who: str | None
    ) -> grpc.RpcMethodHandler | None:
        return handler

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
            who = self._authenticate(presented)
        except UnauthenticatedError as exc:
            log.info("refused %s: %s", method, exc)
            return _deny_handler(handler, exc)
        return self._admitted(method, handler, who)


class TokenAuthInterceptor(_AuthInterceptor):
    """Require ``authorization: Bearer <token>`` metadata; compared in constant time."""

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

    def _authenticate(self, presented: str | bytes | None) -> str | None:
        if isinstance(presented, str):
            presented = presented.encode("utf-8", "replace")
        self._auth.check(presented or b"")
        return None


# Prediction methods: the ones limits and usage apply to, and where their rows are.
_PREDICT_METHODS = {
    "/encryip.v1.EncryIP/Predict": lambda r: r.input.shape[0] if len(r.input.shape) else 0,
    "/inference.GRPCInferenceService/ModelInfer": lambda r: (
        r.inputs[0].shape[0] if len(r.inputs) and len(r.inputs[0].shape) else 0
    ),
}


class LicenseeAuthInterceptor(_AuthInterceptor):
    """Per-licensee bearer tokens (``--tokens-file``): authenticate every call but health;
    for predictions also check the licensee's rate and quota and count requests and rows."""

    def __init__(self, gate: LicenseeGate) -> None:
        self.gate = gate

    def _authenticate(self, presented: str | bytes | None) -> str | None:
        return self.gate.authenticate(presented)

    def _admitted(
        self, method: str, handler: grpc.RpcMethodHandler | None, who: str | None
    ) -> grpc.RpcMethodHandler | None:
        rows_of = _PREDICT_METHODS.get(method)
        if handler is None or who is None or rows_of is None or handler.unary_unary is None:
            return handler
        return _counted_handler(handler, self.gate, who, rows_of)


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
