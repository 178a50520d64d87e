"""Prometheus metrics of one server, in its own registry (several servers per process work).

Labels carry only method names, status codes and outcomes: never inputs, ciphertexts or keys.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ServerMetrics"]

log = logging.getLogger(__name__)
# Methods whose time is a prediction's (encryip_request_seconds); the rest only count.
_PREDICTION_METHODS = ("/Predict", "/ModelInfer")

# Latencies from 50 us to 10 s.
_LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """All metrics of one server. ``registry`` is private to it unless one is given."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_seconds = Histogram(
            "encryip_queue_seconds",
            "Time a request waited in the batching queue",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.inference_seconds = Histogram(
            "encryip_inference_seconds",
            "onnxruntime time per batch",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.crypto_seconds = Histogram(
            "encryip_crypto_seconds",
            "Phi^-1 -> SampDist -> wire time per batch",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.stage_cpu_seconds = Counter(
            "encryip_batch_cpu_seconds",
            "CPU time of the batch threads per stage (inference, protection); the shares "
            "of a batch's SampDist run on --crypto-threads helpers are not included",
            ["stage"],
            registry=r,
        )
        # Bound once: the batch threads add to these after every stage.
        self.stage_cpu = {s: self.stage_cpu_seconds.labels(s) for s in ("inference", "protection")}
        self.request_seconds = Histogram(
            "encryip_request_seconds",
            "Total server-side time per prediction request",
            ["method"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.batch_rows = Histogram(
            "encryip_batch_rows",
            "Rows per onnxruntime call",
            registry=r,
            buckets=_BATCH_BUCKETS,
        )
        self.requests = Counter(
            "encryip_requests",
            "Finished RPCs by method and gRPC status code",
            ["method", "code"],
            registry=r,
        )
        self.rows = Counter("encryip_rows", "Rows predicted", registry=r)
        self.queue_depth = Gauge(
            "encryip_queue_depth", "Requests waiting in the batching queue", registry=r
        )
        self.reloads = Counter(
            "encryip_model_reloads",
            "Model reload attempts by result (success, failure)",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):  # exported as 0 from the start, not on first use
            self.reloads.labels(result=result)
        self.model_loaded = Gauge(
            "encryip_model_loaded_timestamp_seconds",
            "When the model now serving was loaded",
            registry=r,
        )
        # Per model of a repository (the histograms above aggregate over models).
        self.model_rows = Counter(
            "encryip_model_rows", "Rows predicted per model", ["model", "version"], registry=r
        )
        self.model_ready = Gauge(
            "encryip_model_ready",
            "1 while the model version serves, 0 once unloaded",
            ["model", "version"],
            registry=r,
        )
        self.crypto = Gauge(
            "encryip_crypto_info",
            "What computes SampDist for the model now serving (backend: native, libsodium, "
            "numpy; simd: avx2 or portable for native, else none) and how many threads "
            "share one batch's SampDist; the value is 1",
            ["backend", "threads", "simd"],
            registry=r,
        )
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None
        # Labelled children by (method, code): ``labels()`` costs more than the update.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram | None]] = {}

    def set_crypto(self, backend: str, threads: int, simd: str = "none") -> None:
        """Only the current model's backend is reported (a reload may change it)."""
        self.crypto.clear()
        self.crypto.labels(backend=backend, threads=str(threads), simd=simd).set(1)

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        """Every RPC counts in ``encryip_requests_total``; only predictions (Predict,
        ModelInfer) in ``encryip_request_seconds``, so metadata calls do not skew it."""
        child = self._children.get((method, code))
        if child is None:  # a racing duplicate lookup is harmless: labels() is idempotent
            timed = method.endswith(_PREDICTION_METHODS)
            child = (
                self.requests.labels(method=method, code=code),
                self.request_seconds.labels(method=method) if timed else None,
            )
            self._children[(method, code)] = child
        child[0].inc()
        if child[1] is not None:
            child[1].observe(seconds)

    def start_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = a free port); returns the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = server, thread
        bound = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
