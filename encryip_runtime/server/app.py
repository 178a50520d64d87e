"""Assemble and run the server: ``create_server(cfg) -> (server, port)`` and ``serve(cfg)``.

The main port is a ``grpc.aio`` server on an event loop of its own thread: a request
costs one coroutine, not one blocked thread, and the micro-batcher's threads hand each
result back with one loop wake-up. ``EncryIPServer`` keeps a plain blocking API around it.

Lifecycle of one ``EncryIPServer``:

1. ``create_server`` checks the settings and refuses a directory with secret material,
   then starts the plaintext health port (NOT_SERVING) and the metrics port, loads the
   model, and binds the main port. Nothing answers predictions yet.
2. ``start()`` starts the batcher, the main gRPC server and the REST port (``--http-port``,
   aiohttp on the same event loop and the same request path), then health -> SERVING.
3. ``reload()`` (SIGHUP, or file changes when polling) swaps the model atomically or
   keeps the old one.
4. ``stop(grace)`` (SIGTERM): health -> NOT_SERVING and health ``Watch`` streams end, the
   main and REST ports refuse new predictions, accepted ones finish (up to ``grace``
   seconds), the batcher drains, then the REST, health and metrics ports close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Coroutine
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import grpc

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime._generated.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from encryip_runtime.pipeline import CryptoPool, auto_crypto_threads
from encryip_runtime.server.batcher import MicroBatcher
from encryip_runtime.server.config import ServerConfig
from encryip_runtime.server.encryip_servicer import EncryIPServicer
from encryip_runtime.server.health import HealthState
from encryip_runtime.server.inference_servicer import InferenceServicer
from encryip_runtime.server.licensees import LicenseeGate
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.model_store import (
    ModelRepository,
    ModelStore,
    refuse_secret_material,
)
from encryip_runtime.server.predictor import Predictor
from encryip_runtime.server.reflection import enable_reflection
from encryip_runtime.server.rest import RestFrontend
from encryip_runtime.server.security import (
    BearerAuth,
    LicenseeAuthInterceptor,
    TokenAuthInterceptor,
    server_credentials,
    server_ssl_context,
)

__all__ = ["EncryIPServer", "create_server", "serve"]

log = logging.getLogger(__name__)


def resolve_crypto_threads(cfg: ServerConfig) -> int:
    """``--crypto-threads``, with ``auto`` (0) sized from the cores onnxruntime and the
    event loop leave (``pipeline.auto_crypto_threads``)."""
    if cfg.crypto_threads > 0:
        return cfg.crypto_threads
    import onnxruntime as ort

    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    on_gpu = bool(gpu & set(ort.get_available_providers()))
    return auto_crypto_threads(cfg.intra_op_threads, on_gpu=on_gpu)


_T = TypeVar("_T")
# Time between health going NOT_SERVING and the first refused prediction.
_HEALTH_SETTLE_S = 0.1
# Longest time the port keeps refusing new predictions (UNAVAILABLE) before it closes.
_DRAIN_SETTLE_S = 1.0


class EncryIPServer:
    """One runtime instance. Build it with :func:`create_server`."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.metrics = ServerMetrics()
        self.health = HealthState()
        # One crypto pool for the server's life, shared by every model it loads: a
        # reload never closes it under the old model's queued batches.
        self.crypto_pool = CryptoPool(resolve_crypto_threads(cfg))
        self.repository = ModelRepository(
            cfg.release_dir,
            make_store=self._make_store,
            make_batcher=self._make_batcher,
            model_name=cfg.model_name,
            explicit=cfg.model_control == "explicit",
            drain_seconds=cfg.drain_seconds,
            metrics=self.metrics,
        )
        self.predictor = Predictor(self.repository, self.metrics)
        self.port = 0
        self.http_port = 0
        self.health_port = 0
        self.metrics_port = 0
        self._options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        token = cfg.read_token()
        self._auth = BearerAuth(token) if token is not None else None
        self._interceptors: list[grpc.aio.ServerInterceptor] = []
        # Per-licensee tokens, limits and usage (--tokens-file); REST asks the same gate.
        self.licensees: LicenseeGate | None = None
        if cfg.tokens_file is not None:
            self.licensees = LicenseeGate(
                cfg.tokens_file, usage_file=cfg.usage_file, registry=self.metrics.registry
            )
            self._interceptors.append(LicenseeAuthInterceptor(self.licensees))
        elif self._auth is not None:
            self._interceptors.append(TokenAuthInterceptor(self._auth))
        self._rest: RestFrontend | None = None
        # Only the main port ages connections out (clients re-balance after a scale-out);
        # the health port serves kubelet probes, which connect per probe anyway.
        self._main_options = self._options + cfg.grpc_connection_options()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="encryip-grpc", daemon=True
        )
        self._loop_thread.start()
        self._grpc: grpc.aio.Server | None = None
        self._health_server: grpc.Server | None = None
        self._health_executor: futures.ThreadPoolExecutor | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._started = False

    def _make_store(self, path: Path, name: str | None, versioned: bool) -> ModelStore:
        cfg = self.cfg
        return ModelStore(
            path,
            model_name=name,
            intra_op_threads=cfg.intra_op_threads,
            pool_capacity=cfg.reroll_pool,
            crypto_pool=self.crypto_pool,
            metrics=self.metrics,
            versioned=versioned,
        )

    def _make_batcher(self) -> MicroBatcher:
        cfg = self.cfg
        return MicroBatcher(
            max_batch=cfg.max_batch,
            max_delay_s=cfg.max_queue_delay_s,
            max_queue=cfg.max_queue,
            threads=cfg.batch_threads,
            metrics=self.metrics,
        )

    def _default(self) -> tuple[ModelStore, MicroBatcher]:
        entries = list(self.repository._served.values())
        if not entries:
            raise RuntimeError("no model served")
        return entries[0].store, entries[0].batcher

    @property
    def store(self) -> ModelStore:
        """The store of the (first) model served; a single release has only that one."""
        return self._default()[0]

    @property
    def batcher(self) -> MicroBatcher:
        """The batcher of the (first) model served."""
        return self._default()[1]

    def _on_loop(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the server's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _close_loop(self) -> None:
        if self._grpc is not None:
            self._on_loop(self._grpc.stop(None))
            # Drop it now: grpc.aio's process-wide poller thread ends with its last server,
            # and this object may live on (a traceback, the repository's back-references).
            self._grpc = None
        if self._rest is not None:
            self._on_loop(self._rest.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(10)
        if not self._loop_thread.is_alive():
            self._loop.close()

    # -- lifecycle -------------------------------------------------------------------

    def _open(self) -> None:
        """Health + metrics ports up (NOT_SERVING), model loaded, main port bound."""
        cfg = self.cfg
        refuse_secret_material(cfg.release_dir)
        try:
            if cfg.health_port != 0:
                self._open_health_port()
            if cfg.metrics_port != 0:
                self.metrics_port = self.metrics.start_http(cfg.host, cfg.metrics_port)
            self.repository.load_all()
            self._on_loop(self._build_main())
        except BaseException:
            self._close_side_ports()
            self.repository.close()
            self.crypto_pool.close()
            self._close_loop()
            raise

    def _open_health_port(self) -> None:
        cfg = self.cfg
        from grpc_health.v1 import health_pb2_grpc

        self._health_executor = futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="health"
        )
        self._health_server = grpc.server(self._health_executor, options=self._options)
        health_pb2_grpc.add_HealthServicer_to_server(
            self.health.new_servicer(), self._health_server
        )
        address = f"{_host(cfg.host)}:{cfg.health_port}"
        try:
            self.health_port = self._health_server.add_insecure_port(address)
        except RuntimeError:  # grpc: "Failed to bind"
            self.health_port = 0
        if self.health_port == 0:
            raise OSError(f"cannot bind the health port {address} (port in use?)")
        self._health_server.start()
        log.info("health (plaintext, grpc.health.v1 only) on %s:%d", cfg.host, self.health_port)

    async def _build_main(self) -> None:
        """Create the grpc.aio server on the loop (it binds to the running loop)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        cfg = self.cfg
        self._grpc = grpc.aio.server(interceptors=self._interceptors, options=self._main_options)
        encryip_pb2_grpc.add_EncryIPServicer_to_server(
            EncryIPServicer(self.predictor, self.metrics), self._grpc
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                self.predictor, self.metrics, self.health, extensions=["model_repository"]
            ),
            self._grpc,
        )
        health_pb2_grpc.add_HealthServicer_to_server(
            self.health.new_aio_servicer(self._loop), self._grpc
        )
        enable_reflection(
            (
                encryip_pb2.DESCRIPTOR.services_by_name["EncryIP"].full_name,
                grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            ),
            self._grpc,
        )
        address = f"{_host(cfg.host)}:{cfg.port}"
        creds = server_credentials(cfg)
        try:
            if creds is not None:
                self.port = self._grpc.add_secure_port(address, creds)
            else:
                self.port = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpc: "Failed to bind", also for a key that fits no cert
            self.port = 0
        if self.port == 0:
            hint = " (port in use, or --tls-key does not match --tls-cert)" if creds else ""
            raise OSError(f"cannot bind {address}{hint}")
        if cfg.http_port != 0:
            self._rest = RestFrontend(
                self.predictor,
                self.metrics,
                self.health,
                auth=self._auth,
                licensees=self.licensees,
                max_body_bytes=cfg.max_message_bytes,
                cors_origins=cfg.cors_origins,
                extensions=["binary_tensor_data", "model_repository", "encryip"],
                shutdown_timeout_s=min(cfg.drain_seconds, 5.0),
            )
            self.http_port = await self._rest.start(
                cfg.host, cfg.http_port, server_ssl_context(cfg)
            )

    def start(self) -> None:
        """Start answering on the main port; health goes SERVING."""
        if self._started:
            return
        self._started = True
        self.repository.start(self.cfg.reload_poll_seconds)
        assert self._grpc is not None
        self._on_loop(self._grpc.start())
        if self.licensees is not None:
            self.licensees.start()
        self.health.set_serving(True)
        mode = "mTLS" if self.cfg.tls_client_ca else "TLS" if self.cfg.tls else "plaintext"
        log.info("SampDist threads per batch: %d", self.crypto_pool.threads)
        if self.http_port:
            log.info("Open Inference Protocol v2 REST on %s:%d", self.cfg.host, self.http_port)
        log.info(
            "encryip serving on %s:%d (%s%s), max batch %d, queue delay %.1f ms, queue %d",
            self.cfg.host, self.port, mode, _auth_mode(self.cfg),
            self.cfg.max_batch, self.cfg.max_queue_delay_ms, self.cfg.max_queue,
        )  # fmt: skip
        if self.cfg.token_file is not None and not self.cfg.tls:
            log.warning(
                "bearer token over plaintext (--allow-insecure-token): anyone on the path "
                "can read it; end TLS in front of this port"
            )

    def reload(self) -> bool:
        """Load every served model again; True if all new models serve now (each one that
        failed keeps its old model). The tokens file (``--tokens-file``) is re-read too."""
        if self.licensees is not None:
            self.licensees.reload()
        return self.repository.reload()

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, refuse new RPCs, finish accepted ones, close ports."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.cfg.drain_seconds if grace is None else grace
            log.info("draining (up to %.1f s)", grace)
            end = time.monotonic() + grace
            # Watch streams on the main port end now (they sent NOT_SERVING): an open
            # stream must not hold the drain for the whole grace.
            self.health.begin_drain()
            self.repository.stop_polling()
            # Keep serving a moment so health watchers (and load balancers) see the flip
            # before the first refusal; under load a watch update can lag by a few ms.
            time.sleep(min(_HEALTH_SETTLE_S, grace / 4))
            # Phase 1: the port stays open but new predictions get UNAVAILABLE (clean, and
            # retriable elsewhere) while accepted ones finish. Phase 2: close the port; only
            # calls still in grpc's own accept queue at that instant are cut (CANCELLED).
            self.predictor.begin_drain()
            self.predictor.wait_idle(grace)
            # Keep answering UNAVAILABLE a moment so clients mid-send see a clean refusal.
            settle = min(grace / 4, _DRAIN_SETTLE_S) - (time.monotonic() - (end - grace))
            if settle > 0:
                time.sleep(settle)
            if self._grpc is not None:
                # Returns when accepted RPCs have all finished (or were cancelled at the end).
                self._on_loop(self._grpc.stop(max(0.0, end - time.monotonic())))
            if self._rest is not None:
                self._on_loop(self._rest.stop())
                self._rest = None
            self.repository.close_batchers(timeout_s=max(grace, 1.0))
            if self.licensees is not None:
                self.licensees.close()  # the usage ledger's last write
            self.health.shutdown()
            self._close_side_ports()
            self.repository.close()
            self.crypto_pool.close()
            self._grpc = None
            self._close_loop()
            self._stopped.set()
            log.info("stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop`` has finished; True if it has."""
        return self._stopped.wait(timeout)

    def _close_side_ports(self) -> None:
        if self._health_server is not None:
            self._health_server.stop(0).wait()
            self._health_server = None
        if self._health_executor is not None:
            self._health_executor.shutdown(wait=False)
        self.metrics.stop_http()


def _auth_mode(cfg: ServerConfig) -> str:
    if cfg.tokens_file is not None:
        return ", per-licensee tokens"
    return ", token auth" if cfg.token_file is not None else ""


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def create_server(cfg: ServerConfig) -> tuple[EncryIPServer, int]:
    """Load the model and bind every port; call ``server.start()`` to begin serving.

    Raises ``SecretMaterialError`` for a directory with keys or the vault, and the
    loader's errors (``FormatError``, ``ModelError``) for a bad release, and
    ``ConfigError`` for inconsistent settings (e.g. a token over plaintext not allowed).
    """
    cfg.validate()
    refuse_secret_material(cfg.release_dir)  # before anything starts (or logs)
    server = EncryIPServer(cfg)
    server._open()
    return server, server.port


def serve(cfg: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT (drain, exit 0). SIGHUP reloads the model."""
    server, _port = create_server(cfg)
    stop_requested = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading")
        threading.Thread(target=server.reload, name="encryip-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    server.start()
    while not stop_requested.wait(0.5):
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C kills
    server.stop(cfg.drain_seconds)
    return 0
