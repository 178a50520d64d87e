"""Transport security (TLS, mTLS) and bearer-token authentication of the main port."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from encryip_runtime.server.config import ServerConfig
from encryip_runtime.server.status import UnauthenticatedError, status_for

__all__ = ["TokenAuthInterceptor", "server_credentials"]

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
