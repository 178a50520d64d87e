"""The models the server serves: loaded from a release directory or a model repository,
swapped on reload.

``ModelStore`` holds one model. A reload loads the new ``ProtectedModel`` completely (and
checks it) before one reference assignment makes it current; requests already queued
keep the model they were validated against. A release that fails to load is logged and
counted, and the old model keeps serving.

``ModelRepository`` holds every model of the server, each with its own store and its own
micro-batcher: a single release directory (one model, as before), or a Triton-like
repository ``DIR/<model>/<version>/`` (each version directory a licensee or release-style
directory with model.onnx + manifest.json), of which every model's latest version is
served under the model directory's name. A model that fails to load is reported (log,
index, metrics) and skipped; the others serve. Load and unload (``--model-control
explicit``) change one model and never touch the others' batchers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from encryip_runtime.crypto import r255_native
from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.exceptions import EncryIPError, ModelError
from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.formats.secrets import refuse_secret_material
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.status import ModelControlError, UnknownModelError

if TYPE_CHECKING:
    from encryip_runtime.pipeline import CryptoPool, ProtectedModel
    from encryip_runtime.server.batcher import MicroBatcher

__all__ = [
    "IndexEntry",
    "LoadedModel",
    "ModelControlError",
    "ModelRepository",
    "ModelStore",
    "is_repository",
    "latest_version",
    "load_model",
    "refuse_secret_material",
]

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
    prof = profile_of(scheme)
    onehot = 0 if prof.uses_codebook else prof.output_size(scheme)
    return LoadedModel(
        model=pm,
        name=model_name or m.model_name,
        profile=m.profile,
        group=g.name,
        pk=(pk[0], pk[1], pk[-1]),  # (g1, g2, h); format v2 has more generators
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


def _version_dirs(model_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in model_dir.iterdir() if model_dir.is_dir() else ():
        if p.is_dir() and p.name.isdigit() and int(p.name) > 0:
            out.append((int(p.name), p))
    return sorted(out)


def latest_version(model_dir: Path) -> tuple[str, Path]:
    """``(version, directory)`` of the highest numbered version of a repository model."""
    versions = _version_dirs(model_dir)
    if not versions:
        raise ModelError(
            f"{model_dir}: no version directory (expected {model_dir}/<N>/ with model.onnx "
            "and manifest.json, N a positive integer)"
        )
    number, path = versions[-1]
    return str(number), path


def is_repository(root: Path) -> bool:
    """A directory without its own manifest.json whose subdirectories hold numbered
    version directories (``root/<model>/<version>/``)."""
    if (root / "manifest.json").exists() or not root.is_dir():
        return False
    return any(
        _version_dirs(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


class ModelStore:
    """Holds the current ``LoadedModel``; ``reload()`` swaps it atomically or keeps the old.

    ``versioned``: ``release_dir`` is a repository model directory; each load takes its
    latest version directory (a new version directory is picked up on reload)."""

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
        versioned: bool = False,
    ) -> None:
        self.release_dir = release_dir
        self._versioned = versioned
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

    def _target(self) -> tuple[Path, str]:
        if self._versioned:
            version, path = latest_version(self.release_dir)
            return path, version
        return self.release_dir, "1"

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            path, version = self._target()
        except (ModelError, OSError):
            return ()
        return ((version, 0, 0), *release_signature(path))

    def _load(self) -> LoadedModel:
        path, version = self._target()
        loaded = load_model(
            path,
            model_name=self._model_name,
            intra_op_threads=self._threads,
            pool_capacity=self._pool_capacity,
            crypto_threads=self._crypto_threads,
            crypto_pool=self._crypto_pool,
        )
        return dataclasses.replace(loaded, version=version, signature=self._signature())

    def _install(self, loaded: LoadedModel) -> None:
        self._current = loaded  # one reference assignment: atomic for readers
        if self._metrics is not None:
            self._metrics.model_loaded.set(loaded.loaded_at)
            threads = self._crypto_pool.threads if self._crypto_pool else self._crypto_threads
            simd = r255_native.simd() if loaded.crypto_backend == "native" else "none"
            self._metrics.set_crypto(loaded.crypto_backend, threads, simd)

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
            sig = self._signature()
            if sig == last_tried:
                pending = None
                continue
            if sig != pending:  # still changing (or first sight): wait for it to settle
                pending = sig
                continue
            last_tried, pending = sig, None
            log.info("release files changed: reloading")
            self.reload()


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE
    reason: str


@dataclass(frozen=True)
class _Served:
    store: ModelStore
    batcher: MicroBatcher


class ModelRepository:
    """Every model of one server, each with its own ``ModelStore`` and ``MicroBatcher``.

    Readers (the request path, on the event loop) see ``_served``, a dict replaced
    whole on load/unload (copy on write), so they never take a lock."""

    def __init__(
        self,
        root: Path,
        *,
        make_store: Callable[[Path, str | None, bool], ModelStore],
        make_batcher: Callable[[], MicroBatcher],
        model_name: str | None = None,
        explicit: bool = False,
        drain_seconds: float = 5.0,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.root = root
        self.is_repository = is_repository(root)
        self.explicit = explicit
        self._make_store = make_store
        self._make_batcher = make_batcher
        self._model_name = model_name
        self._drain_s = drain_seconds
        self._metrics = metrics
        self._served: dict[str, _Served] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()  # load / unload / reload, one at a time
        self._started = False
        self._poll_s = 0.0

    # -- reading (request path) ------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._served)

    def get(self, name: str) -> tuple[LoadedModel, MicroBatcher] | None:
        """The current model called ``name`` (empty: the only one) and its batcher."""
        served = self._served
        if not name:
            if len(served) != 1:
                return None
            (entry,) = served.values()
        else:
            found = served.get(name)
            if found is None:
                return None
            entry = found
        loaded = entry.store.current
        return None if loaded is None else (loaded, entry.batcher)

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        out: dict[str, IndexEntry] = {}
        if self.is_repository:
            for name in self._discover():
                out[name] = IndexEntry(name, "", "UNAVAILABLE", "not loaded")
        # Snapshots: load/unload threads change these while the loop reads them.
        for name, reason in list(self._failed.items()):
            out[name] = IndexEntry(name, "", "UNAVAILABLE", reason)
        for name, entry in list(self._served.items()):
            cur = entry.store.current
            if cur is not None:
                out[name] = IndexEntry(name, cur.version, "READY", "")
        rows = [out[k] for k in sorted(out)]
        return [r for r in rows if r.state == "READY"] if ready_only else rows

    # -- lifecycle -------------------------------------------------------------------

    def load_all(self) -> None:
        """First load. A single release must load (its errors propagate); in a repository
        every model that loads serves and the others are reported, but at least one must."""
        if not self.is_repository:
            store = self._make_store(self.root, self._model_name, False)
            loaded = store.load()
            self._served = {loaded.name: _Served(store, self._make_batcher())}
            self._set_ready(loaded, True)
            return
        for name in self._discover():
            try:
                self._add(name)
            except Exception as exc:
                self._fail(name, exc)
        if not self._served:
            problems = "; ".join(f"{k}: {v}" for k, v in sorted(self._failed.items()))
            raise ModelError(f"no model of the repository {self.root} could be loaded ({problems})")

    def start(self, poll_seconds: float) -> None:
        self._started = True
        self._poll_s = poll_seconds
        for entry in self._served.values():
            entry.batcher.start()
            entry.store.start_polling(poll_seconds)

    def reload(self) -> bool:
        """Reload every served model (each keeps its old one on failure); True if all
        reloaded. In a repository, models not loaded yet are not loaded by a reload."""
        results = [entry.store.reload() for entry in list(self._served.values())]
        return all(results)

    def load(self, name: str) -> None:
        """Load (or reload) one model of the repository (``--model-control explicit``)."""
        self._check_control(name)
        with self._lock:
            entry = self._served.get(name)
            if entry is not None:
                if not entry.store.reload():
                    raise ModelControlError(f"reload of model {name!r} failed; see the server log")
                return
            try:
                self._add(name)
            except Exception as exc:
                self._fail(name, exc)
                raise ModelControlError(f"failed to load model {name!r}: {_reason(exc)}") from None

    def unload(self, name: str) -> None:
        """Stop serving one model: new requests for it get 404 at once; the ones it has
        queued are answered; the other models' batchers are not touched."""
        self._check_control(name)
        with self._lock:
            entry = self._served.get(name)
            if entry is None:
                raise ModelControlError(f"model {name[:128]!r} is not loaded")
            served = dict(self._served)
            del served[name]
            self._served = served
            self._failed[name] = "unloaded"
        entry.store.stop_polling()
        entry.batcher.close(timeout_s=self._drain_s)
        cur = entry.store.current
        if cur is not None:
            self._set_ready(cur, False)
        entry.store.close()
        log.info("unloaded model %r", name)

    def batchers(self) -> list[MicroBatcher]:
        return [e.batcher for e in self._served.values()]

    def stop_polling(self) -> None:
        for entry in self._served.values():
            entry.store.stop_polling()

    def close_batchers(self, timeout_s: float) -> None:
        for entry in self._served.values():
            entry.batcher.close(timeout_s=timeout_s)

    def close(self) -> None:
        for entry in self._served.values():
            entry.store.close()

    # -- internals -------------------------------------------------------------------

    def _discover(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name != "keys"
        )

    def _check_control(self, name: str) -> None:
        if not self.explicit:
            raise ModelControlError(
                "model load/unload needs --model-control explicit (this server: none)"
            )
        if not self.is_repository:
            raise ModelControlError("model load/unload needs a model repository DIR/<model>/<N>/")
        if name not in self._discover():
            raise UnknownModelError(
                f"unknown model {name[:128]!r}: the repository has {', '.join(self._discover())}"
            )

    def _add(self, name: str) -> None:
        store = self._make_store(self.root / name, name, True)
        loaded = store.load()
        batcher = self._make_batcher()
        if self._started:
            batcher.start()
            store.start_polling(self._poll_s)
        served = dict(self._served)
        served[name] = _Served(store, batcher)
        self._served = served
        self._failed.pop(name, None)
        self._set_ready(loaded, True)

    def _fail(self, name: str, exc: BaseException) -> None:
        reason = _reason(exc)
        self._failed[name] = reason
        log.error("model %r of %s not served: %s", name, self.root, reason)
        if self._metrics is not None:
            self._metrics.reloads.labels(result="failure").inc()

    def _set_ready(self, loaded: LoadedModel, ready: bool) -> None:
        if self._metrics is not None:
            self._metrics.model_ready.labels(model=loaded.name, version=loaded.version).set(
                1 if ready else 0
            )


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, EncryIPError) else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
