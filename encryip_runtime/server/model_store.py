"""The model the server is serving now, loaded from a release directory and swapped on reload.

A reload loads the new ``ProtectedModel`` completely (and checks it) before one
reference assignment makes it current; requests already queued keep the model they
were validated against. A release that fails to load is logged and counted, and the
old model keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.formats.secrets import refuse_secret_material
from encryip_runtime.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from encryip_runtime.pipeline import CryptoPool, ProtectedModel

__all__ = ["LoadedModel", "ModelStore", "load_model", "refuse_secret_material"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and everything the servicers report about it."""

    model: ProtectedModel
    name: str
    profile: str
    group: str
    pk: tuple[str, str, str]
    num_classes: int
    class_names: tuple[str, ...]
    spec: InputSpec
    digest: str
    ciphertext_size: int
    crypto_backend: str
    onehot_size: int
    loaded_at: float
    signature: tuple[tuple[str, int, int], ...]
    # The version it is served as (a repository's version directory; "1" otherwise).
    version: str = "1"


def release_signature(release_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of the files a reload depends on (missing: -1, -1)."""
    out = []
    names = ["manifest.json", *sorted(p.name for p in release_dir.glob("*.onnx"))]
    for name in names:
        try:
            st = (release_dir / name).stat()
            out.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((name, -1, -1))
    return tuple(out)


def load_model(
    release_dir: Path,
    *,
    model_name: str | None = None,
    intra_op_threads: int = 0,
    pool_capacity: int = 0,
    crypto_threads: int = 1,
    crypto_pool: CryptoPool | None = None,
) -> LoadedModel:
    """Load and describe the release (raises on anything wrong; never returns half a model)."""
    from encryip_runtime.pipeline import ProtectedModel

    refuse_secret_material(release_dir)
    signature = release_signature(release_dir)
    pm = ProtectedModel.load(
        release_dir,
        intra_op_threads=intra_op_threads,
        pool_capacity=pool_capacity,
        crypto_threads=crypto_threads,
        crypto_pool=crypto_pool,
        inputs_checked=True,  # the request path runs tensors.check_input, once
    )
    m = pm.manifest
    scheme = m.scheme
    g = scheme.group
    pk = tuple(str(g.to_json(part)[0]) for part in m.pk.parts())
    spec = m.input
    onehot = 3 * (g.order + 1) if m.profile == "paper" else 0
    return LoadedModel(
        model=pm,
        name=model_name or m.model_name,
        profile=m.profile,
        group=g.name,
        pk=(pk[0], pk[1], pk[2]),
        num_classes=m.num_classes,
        class_names=tuple(m.class_names),
        spec=spec,
        digest=m.digest,
        ciphertext_size=scheme.ciphertext_size,
        crypto_backend=pm.crypto_backend,
        onehot_size=onehot,
        loaded_at=time.time(),
        signature=signature,
    )


class ModelStore:
    """Holds the current ``LoadedModel``; ``reload()`` swaps it atomically or keeps the old."""

    def __init__(
        self,
        release_dir: Path,
        *,
        model_name: str | None = None,
        intra_op_threads: int = 0,
        pool_capacity: int = 0,
        crypto_threads: int = 1,
        crypto_pool: CryptoPool | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.release_dir = release_dir
        self._model_name = model_name
        self._threads = intra_op_threads
        self._pool_capacity = pool_capacity
        self._crypto_threads = crypto_threads
        # The server's SampDist threads, shared by every model loaded here (never closed
        # by a reload: the old model's queued batches still use them).
        self._crypto_pool = crypto_pool
        self._metrics = metrics
        self._current: LoadedModel | None = None
        self._reload_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def load(self) -> LoadedModel:
        """First load: errors propagate (the server must not start without a model)."""
        loaded = self._load()
        self._install(loaded)
        log.info(
            "serving model %r (profile %s, %d classes, manifest %s)",
            loaded.name,
            loaded.profile,
            loaded.num_classes,
            loaded.digest[:16],
        )
        return loaded

    def reload(self) -> bool:
        """Load the release again; True if the new model now serves. Never raises."""
        with self._reload_lock:
            try:
                loaded = self._load()
            except Exception as exc:
                if self._metrics is not None:
                    self._metrics.reloads.labels(result="failure").inc()
                log.error(
                    "reload of %s failed, the previous model keeps serving: %s: %s",
                    self.release_dir,
                    type(exc).__name__,
                    exc,
                )
                return False
            old = self._current
            if old is not None and loaded.name != old.name:
                log.warning("model name changed on reload: %r -> %r", old.name, loaded.name)
            self._install(loaded)
            if old is not None:
                # Stops only its background re-randomiser pool; queued requests still run.
                old.model.close()
            if self._metrics is not None:
                self._metrics.reloads.labels(result="success").inc()
            log.info("reloaded model %r (manifest %s)", loaded.name, loaded.digest[:16])
            return True

    def _load(self) -> LoadedModel:
        return load_model(
            self.release_dir,
            model_name=self._model_name,
            intra_op_threads=self._threads,
            pool_capacity=self._pool_capacity,
            crypto_threads=self._crypto_threads,
            crypto_pool=self._crypto_pool,
        )

    def _install(self, loaded: LoadedModel) -> None:
        self._current = loaded  # one reference assignment: atomic for readers
        if self._metrics is not None:
            self._metrics.model_loaded.set(loaded.loaded_at)
            threads = self._crypto_pool.threads if self._crypto_pool else self._crypto_threads
            self._metrics.set_crypto(loaded.crypto_backend, threads)

    # -- polling ---------------------------------------------------------------------

    def start_polling(self, interval_s: float) -> None:
        """Reload when model.onnx or manifest.json changed and stayed unchanged one interval."""
        if interval_s <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(
            target=self._poll, args=(interval_s,), name="encryip-reload-poll", daemon=True
        )
        self._poller.start()

    def close(self) -> None:
        self.stop_polling()
        if self._current is not None:
            self._current.model.close()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)

    def _poll(self, interval_s: float) -> None:
        current = self._current
        last_tried = current.signature if current is not None else None
        pending: tuple[tuple[str, int, int], ...] | None = None
        while not self._stop.wait(interval_s):
            sig = release_signature(self.release_dir)
            if sig == last_tried:
                pending = None
                continue
            if sig != pending:  # still changing (or first sight): wait for it to settle
                pending = sig
                continue
            last_tried, pending = sig, None
            log.info("release files changed: reloading")
            self.reload()
