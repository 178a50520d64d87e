"""grpc.health.v1 for the main port and the plaintext probe port, switched together.

Check, Watch and List: grpcio-health-checking (1.85) implements Check and Watch; its
stubs have List (a snapshot of every service's status), which the servicers here add.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

__all__ = ["HEALTH_SERVICE_NAMES", "HealthState"]

log = logging.getLogger(__name__)

# "" is the whole server; Kubernetes probes and deploy/ use these exact names.
HEALTH_SERVICE_NAMES: tuple[str, ...] = ("", "encryip.v1.EncryIP", "inference.GRPCInferenceService")


class HealthState:
    """Serving status shared by every health servicer of one server.

    The main port runs on grpc.aio (its servicer lives on that event loop); the
    plaintext probe port is a small threaded server. Both are switched together.
    """

    def __init__(self) -> None:
        self._servicers: list[health.HealthServicer] = []
        self._aio: list[tuple[health.aio.HealthServicer, asyncio.AbstractEventLoop]] = []
        self._serving = False

    def new_servicer(self) -> health.HealthServicer:
        servicer = _HealthServicer(self)
        self._servicers.append(servicer)
        self._apply(servicer)
        return servicer

    def new_aio_servicer(self, loop: asyncio.AbstractEventLoop) -> health.aio.HealthServicer:
        """A servicer for a grpc.aio server running on ``loop``."""
        servicer = _AioHealthServicer(self)
        self._aio.append((servicer, loop))
        self._apply_aio(servicer, loop)
        return servicer

    @property
    def serving(self) -> bool:
        return self._serving

    def set_serving(self, serving: bool) -> None:
        if serving != self._serving:
            log.info("health: %s", "SERVING" if serving else "NOT_SERVING")
        self._serving = serving
        for servicer in self._servicers:
            self._apply(servicer)
        for aio_servicer, loop in self._aio:
            self._apply_aio(aio_servicer, loop)

    def shutdown(self) -> None:
        """Final NOT_SERVING; open Watch streams end."""
        self._serving = False
        for servicer in self._servicers:
            servicer.enter_graceful_shutdown()
        for aio_servicer, loop in self._aio:
            _run_on(loop, aio_servicer.enter_graceful_shutdown())

    def list_response(self) -> health_pb2.HealthListResponse:
        """``List``: the status of every service name this server reports."""
        status = self._status()
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status) for name in HEALTH_SERVICE_NAMES
            }
        )

    def _status(self) -> int:
        return (
            health_pb2.HealthCheckResponse.SERVING
            if self._serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def _apply(self, servicer: health.HealthServicer) -> None:
        for name in HEALTH_SERVICE_NAMES:
            servicer.set(name, self._status())

    def _apply_aio(
        self, servicer: health.aio.HealthServicer, loop: asyncio.AbstractEventLoop
    ) -> None:
        status = self._status()

        async def apply() -> None:
            for name in HEALTH_SERVICE_NAMES:
                await servicer.set(name, status)

        _run_on(loop, apply())


class _HealthServicer(health.HealthServicer):
    """The threaded servicer (plaintext probe port) plus ``List``."""

    def __init__(self, state: HealthState) -> None:
        super().__init__(experimental_non_blocking=True)
        self._state = state

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return self._state.list_response()


class _AioHealthServicer(health.aio.HealthServicer):
    """The grpc.aio servicer (main port) plus ``List``."""

    def __init__(self, state: HealthState) -> None:
        super().__init__()
        self._state = state

    async def List(
        self,
        request: health_pb2.HealthListRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> health_pb2.HealthListResponse:
        return self._state.list_response()


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on ``loop``: wait for it from another thread, schedule it from the loop."""
    if loop.is_closed():
        coro.close()
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(coro)
        return
    if not loop.is_running():
        coro.close()  # the loop stopped: nobody can watch its health any more
        return
    with contextlib.suppress(TimeoutError, concurrent.futures.TimeoutError):
        asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=5)
