"""The one place where exceptions become gRPC status codes (and HTTP statuses for REST).

Servicers, interceptors and the REST front end never pick a status code themselves: they
raise (or let through) an exception, and :func:`status_for` decides; :func:`http_status_for`
maps that decision to HTTP (Google's gRPC <-> HTTP table). Unknown exceptions become
``INTERNAL`` with a generic message; their details go to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from encryip_runtime.exceptions import (
    EncodingError,
    EncryIPError,
    InferenceError,
    InputError,
)

__all__ = [
    "DeadlineExpiredError",
    "LimitExceededError",
    "ModelControlError",
    "NotReadyError",
    "QueueFullError",
    "UnauthenticatedError",
    "UnknownModelError",
    "abort",
    "grpc_method",
    "http_status_for",
    "status_for",
]

log = logging.getLogger(__name__)

GENERIC_INTERNAL = "internal error"
GENERIC_INFERENCE = "inference failed"


class QueueFullError(EncryIPError):
    """The request queue is full (``RESOURCE_EXHAUSTED``); retry with backoff."""


class RequestTooLargeError(EncryIPError):
    """A request larger than the server accepts (``RESOURCE_EXHAUSTED``)."""


class LimitExceededError(EncryIPError):
    """A licensee's rate limit or quota is used up (``RESOURCE_EXHAUSTED``; HTTP 429)."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExpiredError(EncryIPError):
    """The request's deadline passed before it could run (``DEADLINE_EXCEEDED``)."""


class NotReadyError(EncryIPError):
    """No model loaded yet, or the server is draining (``UNAVAILABLE``)."""


class UnauthenticatedError(EncryIPError):
    """Missing or wrong bearer token (``UNAUTHENTICATED``)."""


class ModelControlError(EncryIPError):
    """A repository request the server refuses (``FAILED_PRECONDITION``): load/unload
    without ``--model-control explicit``, or a model that failed to load."""


class UnknownModelError(InputError):
    """A model name (or version) this server does not serve (``NOT_FOUND``)."""


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and the client-visible message for an exception."""
    if isinstance(exc, UnknownModelError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, (InputError, EncodingError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, (QueueFullError, RequestTooLargeError, LimitExceededError)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, DeadlineExpiredError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, NotReadyError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, UnauthenticatedError):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, ModelControlError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, InferenceError):
        return grpc.StatusCode.INTERNAL, GENERIC_INFERENCE
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL


# gRPC status -> HTTP status, as in google.rpc's code.proto / grpc-gateway.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
}


def http_status_for(exc: BaseException) -> tuple[int, grpc.StatusCode, str]:
    """HTTP status, the gRPC code it stands for (metrics) and the client-visible message.

    One refinement over the plain table: a request body over the limit is 413 (an
    unknown model or version is NOT_FOUND, 404, as on gRPC)."""
    code, message = status_for(exc)
    if isinstance(exc, RequestTooLargeError):
        return 413, code, message
    return _HTTP_STATUS.get(code, 500), code, message


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """Abort the RPC with the status of ``exc`` (logging unexpected ones)."""
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("request failed: %s", type(exc).__name__, exc_info=exc)
    else:
        log.debug("request refused: %s: %s", code.name, message)
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort returned")  # pragma: no cover


F = TypeVar("F", bound=Callable[..., Any])


class _Observer(Protocol):
    def observe(self, method: str, code: str, seconds: float) -> None: ...


def grpc_method(name: str) -> Callable[[F], F]:
    """Decorate an async unary servicer method: time it, map any exception through
    :func:`status_for`, and report ``(name, status code, seconds)`` to ``self.observe``."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def wrapper(
            self: _Observer, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            t0 = time.perf_counter()
            try:
                response = await method(self, request, context)
            except asyncio.CancelledError:
                # grpc cancels the handler when the client goes away or the deadline passes.
                expired = context.time_remaining() is not None and context.time_remaining() <= 0
                code = "DEADLINE_EXCEEDED" if expired else "CANCELLED"
                self.observe(name, code, time.perf_counter() - t0)
                raise
            except Exception as exc:  # servicers raise; they never call context.abort
                status, _ = status_for(exc)
                self.observe(name, status.name, time.perf_counter() - t0)
                await abort(context, exc)
            self.observe(name, "OK", time.perf_counter() - t0)
            return response

        return wrapper  # type: ignore[return-value]

    return decorate
