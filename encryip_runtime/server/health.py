"""grpc.health.v1 for the main port and the plaintext probe port, switched together."""

from __future__ import annotations

import logging

from grpc_health.v1 import health, health_pb2

__all__ = ["HEALTH_SERVICE_NAMES", "HealthState"]

log = logging.getLogger(__name__)

# "" is the whole server; Kubernetes probes and deploy/ use these exact names.
HEALTH_SERVICE_NAMES: tuple[str, ...] = ("", "encryip.v1.EncryIP", "inference.GRPCInferenceService")


class HealthState:
    """Serving status shared by every health servicer of one server."""

    def __init__(self) -> None:
        self._servicers: list[health.HealthServicer] = []
        self._serving = False

    def new_servicer(self) -> health.HealthServicer:
        servicer = health.HealthServicer(experimental_non_blocking=True)
        self._servicers.append(servicer)
        self._apply(servicer)
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

    def shutdown(self) -> None:
        """Final NOT_SERVING; open Watch streams end."""
        self._serving = False
        for servicer in self._servicers:
            servicer.enter_graceful_shutdown()

    def _apply(self, servicer: health.HealthServicer) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in HEALTH_SERVICE_NAMES:
            servicer.set(name, status)
