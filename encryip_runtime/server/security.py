"""Transport security (TLS, mTLS) and bearer-token authentication of the main and REST ports.

One ``BearerAuth`` decides for both protocols: the gRPC interceptor hands it the
``authorization`` metadata, the REST front end the ``Authorization`` header.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from encryip_runtime.server.config import ServerConfig
from encryip_runtime.server.status import UnauthenticatedError, status_for

__all__ = ["BearerAuth", "TokenAuthInterceptor", "server_credentials", "server_ssl_context"]

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


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Require ``authorization: Bearer <token>`` metadata; compared in constant time."""

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

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
        try:
            self._auth.check(presented)
        except UnauthenticatedError as exc:
            log.info("refused %s: %s", method, exc)
            return _deny_handler(await continuation(handler_call_details), exc)
        return await continuation(handler_call_details)


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
