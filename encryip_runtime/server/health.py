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
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["HEALTH_SERVICE_NAMES", "DrainableHealthServicer", "HealthState"]

log = logging.getLogger(__name__)

# "" is the whole server; Kubernetes probes and deploy/ use these exact names.
HEALTH_SERVICE_NAMES: tuple[str, ...] = ("", "encryip.v1.EncryIP", "inference.GRPCInferenceService")


class DrainableHealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for a grpc.aio server whose Watch streams end when the drain starts.

    grpc's own aio servicer keeps a Watch open until the server stops, so the server's
    ``stop(grace)`` waited the whole grace for it. Here :meth:`end_streams` makes every
    open (and every later) Watch send its last status, NOT_SERVING, and finish with OK.
    """

    def __init__(self) -> None:
        self._status: dict[str, int] = {}
        self._changed: asyncio.Condition | None = None  # created on the serving loop
        self._ending = False

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        changed = self._condition()
        last: int | None = None
        async with changed:
            while True:
                status = self._status.get(
                    request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                )
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                if self._ending:
                    return
                await changed.wait()

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> Any:
        """A snapshot of every service's status (the protocol's ``List``)."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._status.items()
            }
        )

    async def set(self, service: str, status: int) -> None:
        if self._ending:
            return
        async with self._condition():
            self._status[service] = status
            self._condition().notify_all()

    async def end_streams(self) -> None:
        """Everything NOT_SERVING, for good; open Watch streams send that and end."""
        async with self._condition():
            self._ending = True
            for service in self._status:
                self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._condition().notify_all()


class HealthState:
    """Serving status shared by every health servicer of one server.

    The main port runs on grpc.aio (its servicer lives on that event loop); the
    plaintext probe port is a small threaded server. Both are switched together.
    """

    def __init__(self) -> None:
        self._servicers: list[health.HealthServicer] = []
        self._aio: list[tuple[DrainableHealthServicer, asyncio.AbstractEventLoop]] = []
        self._serving = False

    def new_servicer(self) -> health.HealthServicer:
        servicer = _HealthServicer(self)
        self._servicers.append(servicer)
        self._apply(servicer)
        return servicer

    def new_aio_servicer(self, loop: asyncio.AbstractEventLoop) -> DrainableHealthServicer:
        """A servicer for a grpc.aio server running on ``loop``."""
        servicer = DrainableHealthServicer()
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

    def begin_drain(self) -> None:
        """NOT_SERVING for good on the main port: its Watch streams send that and end, so
        they do not hold the server's drain (the probe port keeps answering until
        :meth:`shutdown`)."""
        self.set_serving(False)
        for aio_servicer, loop in self._aio:
            _run_on(loop, aio_servicer.end_streams())

    def shutdown(self) -> None:
        """Final NOT_SERVING; open Watch streams end."""
        self._serving = False
        for servicer in self._servicers:
            servicer.enter_graceful_shutdown()
        for aio_servicer, loop in self._aio:
            _run_on(loop, aio_servicer.end_streams())

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
        self, servicer: DrainableHealthServicer, loop: asyncio.AbstractEventLoop
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
