"""Algorithm 2 without a server: ONNX logits -> Φ⁻¹ -> SampDist -> wire ciphertexts.

The gRPC server and in-process users share this one code path. It never sees a
secret key: ``load`` refuses a directory holding key files or a vault.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.crypto.scheme import Ciphertexts, Elements
from encryip_runtime.exceptions import InferenceError, InputError, ModelError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.secrets import refuse_secret_material
from encryip_runtime.transfer import CodebookTransfer, OneHotTransfer

__all__ = [
    "CryptoPool",
    "ProtectedModel",
    "RerandomizerPool",
    "auto_crypto_threads",
    "check_no_secrets",
    "resolve_release_dir",
]

log = logging.getLogger(__name__)

# Below this many rows per thread, handing work to another thread costs more than it saves
# (benchmarks/crypto.py measures the crossover: docs/internals.md, "Crypto threads").
_MIN_ROWS_PER_THREAD = 16


def _cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """A container's CPU limit in whole cores (cgroup v2 ``cpu.max``: "quota period"),
    rounded up; None when unlimited or unknown. Kubernetes sets it from resources.limits."""
    try:
        quota, period = path.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask (else the machine's count), capped
    by a container's CPU limit (a pod sees every core of its node in the mask)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit is not None else n)


def auto_crypto_threads(
    intra_op_threads: int = 0, *, cores: int | None = None, on_gpu: bool = False
) -> int:
    """``--crypto-threads auto``: the cores left after the event loop (one) and
    onnxruntime's threads, at least 1.

    onnxruntime's threads are ``intra_op_threads`` when set; its default (0) uses every
    core on CPU, leaving none, and about one on a GPU, where the network runs elsewhere.
    So a 2-core CPU pod gets 1 (SampDist on the batch thread) and a 16-core GPU box 14.
    """
    n = usable_cores() if cores is None else cores
    ort = intra_op_threads if intra_op_threads > 0 else (1 if on_gpu else n)
    return max(1, n - 1 - ort)


class CryptoPool:
    """Threads that share one batch's SampDist (the calling thread takes a share too).

    One per server, shared by every model it loads: a reload never shuts it down under a
    batch of the old model that is still queued (the C code releases the GIL, so the
    shares run in parallel). ``threads`` counts the caller: 1 means no helper threads.
    """

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"crypto threads must be at least 1, got {threads}")
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        if threads > 1:
            self._executor = ThreadPoolExecutor(threads - 1, thread_name_prefix="encryip-sampdist")

    def split(
        self,
        rows: int,
        run: Callable[[int, int], Ciphertexts],
        min_rows: int = _MIN_ROWS_PER_THREAD,
    ) -> Ciphertexts:
        """``run(a, b)`` over ``[0, rows)`` cut into contiguous shares, concatenated in order.

        Small batches (under ``min_rows`` rows a share) stay on the calling thread; so does
        everything once the pool is closed.
        """
        parts = min(self.threads, rows // max(1, min_rows))
        if self._executor is None or parts < 2:
            return run(0, rows)
        bounds = [rows * i // parts for i in range(parts + 1)]
        try:
            helpers = [self._executor.submit(run, a, b) for a, b in pairwise(bounds[1:])]
        except RuntimeError:  # closed: this thread does it all
            return run(0, rows)
        first = run(bounds[0], bounds[1])
        return np.concatenate([first, *(h.result() for h in helpers)])

    def close(self) -> None:
        """Let running shares finish; later splits run on the calling thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def resolve_release_dir(path: Path) -> Path:
    """Accept a release directory, a licensee directory or a manifest.json path."""
    p = Path(path)
    if p.is_file() and p.name.endswith(".json"):
        p = p.parent
    if not p.is_dir():
        raise ModelError(f"{p}: not a directory")
    if not (p / "manifest.json").is_file():
        raise ModelError(f"{p}: no manifest.json here (expected a release or licensee directory)")
    return p


def check_no_secrets(directory: Path) -> None:
    """Refuse to serve from a directory that holds a key or the vault (formats/secrets.py)."""
    refuse_secret_material(directory)


class RerandomizerPool:
    """Precomputed (g1^r, g2^r, h^r) triples, each handed out exactly once.

    A background thread keeps up to ``capacity`` triples ready, so the three scalar
    multiplications per row run while the server is idle or waiting on inference
    instead of on the request's path. It refills in chunks (a quarter of the capacity,
    at most ``chunk``) once that much room is free, not after every request: a refill
    right behind each small request would compete with the next one for the CPU.
    Reusing a triple would link two outputs, so ``take`` removes what it returns under
    a lock; when the pool runs dry the rest is computed inline with fresh scalars.
    """

    def __init__(self, model: ProtectedModel, capacity: int, chunk: int = 256):
        if capacity < 1 or chunk < 1:
            raise ValueError("capacity and chunk must be at least 1")
        self._model = model
        self._capacity = capacity
        self._chunk = max(1, min(chunk, capacity // 4))
        # FIFO of (g1^r, g2^r, h^r) batches (format v2: one column per pk element, the
        # last with the label-preserving shift); ``_size`` counts their rows.
        self._parts: collections.deque[tuple[Elements, ...]] = collections.deque()
        self._size = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="rerandomizer-pool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and self._capacity - self._size < self._chunk:
                    self._wake.wait()
                if self._stop:
                    return
                want = self._chunk
            r = self._model.scheme.rerandomizers(self._model.manifest.pk, want)
            with self._lock:
                self._parts.append(tuple(r))
                self._size += want

    def take(self, count: int) -> tuple[Elements, ...]:
        """``count`` triples nobody else ever gets (inline when the pool is short)."""
        got: list[tuple[Elements, ...]] = []
        with self._lock:
            need = count
            while need and self._parts:
                head = self._parts[0]
                if len(head[0]) <= need:
                    self._parts.popleft()
                    got.append(head)
                    need -= len(head[0])
                else:
                    got.append(tuple(col[:need] for col in head))
                    self._parts[0] = tuple(col[need:] for col in head)
                    need = 0
            self._size -= count - need
            self._wake.notify()
        if need:  # pool ran dry: compute the rest inline
            got.append(tuple(self._model.scheme.rerandomizers(self._model.manifest.pk, need)))
        if len(got) == 1:
            return got[0]
        return tuple(np.concatenate([g[k] for g in got]) for k in range(len(got[0])))

    @property
    def size(self) -> int:
        """Triples ready now."""
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout=5)


def _providers(requested: Sequence[str] | None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            log.warning(
                "execution providers %s not available (have %s); falling back", missing, available
            )
        chosen = [p for p in requested if p in available]
        return chosen or ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        log.info("using CUDAExecutionProvider (falls back to CPU per node when needed)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class ProtectedModel:
    """A loaded release: call ``predict`` for confused labels (wire ciphertexts)."""

    def __init__(
        self,
        manifest: Manifest,
        session: Any,
        directory: Path | None = None,
        pool_capacity: int = 0,
        crypto_threads: int = 1,
        crypto_pool: CryptoPool | None = None,
        inputs_checked: bool = False,
    ):
        self.manifest = manifest
        # The server's request path checks every tensor once (server/tensors.check_input)
        # before it is queued; then ``logits`` does not check the batch a second time.
        self._inputs_checked = inputs_checked
        self.scheme = manifest.scheme
        self.transfer = manifest.transfer()
        self.session = session
        self.directory = directory
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != manifest.input.name:
            raise ModelError(
                f"model input {[i.name for i in inputs]} does not match the manifest's "
                f"input.name {manifest.input.name!r}"
            )
        if len(outputs) != 1 or outputs[0].name != manifest.output_name:
            raise ModelError(
                f"model output {[o.name for o in outputs]} does not match the manifest's "
                f"output.name {manifest.output_name!r}"
            )
        want_type = f"tensor({manifest.input.dtype})"
        if inputs[0].type != want_type:
            raise ModelError(
                f"model input type {inputs[0].type} but the manifest says {manifest.input.dtype}"
            )
        out_shape = outputs[0].shape
        if len(out_shape) != 2 or (
            isinstance(out_shape[1], int) and out_shape[1] != manifest.output_size
        ):
            raise ModelError(
                f"model output shape {out_shape} does not match manifest output.size "
                f"{manifest.output_size}"
            )
        if crypto_threads < 1:
            raise ValueError("crypto_threads must be at least 1")
        # Threads for one batch's SampDist: the server's (shared by every model it loads,
        # never closed here) or, standalone, our own.
        self._owns_crypto = crypto_pool is None
        self._crypto = crypto_pool if crypto_pool is not None else CryptoPool(crypto_threads)
        # Secure profile: the codebook prepared once (its decoded halves), so a row's
        # SampDist needs no decode and no square root.
        self._codebook: Any = None
        if isinstance(self.transfer, CodebookTransfer):
            self._codebook = self.scheme.prepare_codebook(self.transfer.codebook)
        self._pool: RerandomizerPool | None = None
        if pool_capacity > 0 and profile_of(manifest.scheme).pools_rerandomizers:
            self._pool = RerandomizerPool(self, pool_capacity)

    # -- loading --------------------------------------------------------------
    @classmethod
    def load(
        cls,
        directory: Path | str,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        pool_capacity: int = 0,
        crypto_threads: int = 1,
        crypto_pool: CryptoPool | None = None,
        inputs_checked: bool = False,
    ) -> ProtectedModel:
        import onnxruntime as ort

        d = resolve_release_dir(Path(directory))
        check_no_secrets(d)
        manifest = Manifest.load(d / "manifest.json")
        model_path = d / manifest.model_file
        try:
            data = model_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{model_path}: cannot read ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != manifest.model_sha256:
            raise ModelError(
                f"{model_path}: sha256 does not match manifest.json (model.sha256); "
                "the model and manifest belong to different releases or the file is corrupt"
            )
        opts = ort.SessionOptions()
        if intra_op_threads > 0:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(data, sess_options=opts, providers=_providers(providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{model_path}: onnxruntime cannot load it ({exc})") from None
        return cls(
            manifest,
            session,
            d,
            pool_capacity=pool_capacity,
            crypto_threads=crypto_threads,
            crypto_pool=crypto_pool,
            inputs_checked=inputs_checked,
        )

    def close(self) -> None:
        """Stop the background work. Batches still queued for this model keep working
        (on the calling thread when the pool it owned is closed; a server's pool stays)."""
        if self._pool is not None:
            self._pool.close()
        if self._owns_crypto:
            self._crypto.close()

    @property
    def crypto_backend(self) -> str:
        """What computes SampDist: "native", "libsodium" or "numpy" (paper profile)."""
        return self.scheme.group.backend

    # -- input ----------------------------------------------------------------
    def validate_input(self, x: npt.NDArray[Any], name: str | None = None) -> npt.NDArray[Any]:
        """Check dtype/shape/values against the manifest; returns the array to feed."""
        spec = self.manifest.input
        name = name or spec.name
        x = np.asarray(x)
        if x.ndim == 3 and (x.shape == spec.shape):
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != spec.shape:
            raise InputError(
                f"input {name!r}: expected shape [N, {', '.join(map(str, spec.shape))}], "
                f"got {list(x.shape)}"
            )
        if x.shape[0] == 0:
            raise InputError(f"input {name!r}: empty batch")
        if spec.dtype == "uint8":
            if x.dtype == np.uint8:
                return np.ascontiguousarray(x)
            if x.dtype.kind == "f":
                if not np.isfinite(x).all():
                    raise InputError(f"input {name!r}: contains NaN or infinity")
                if x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
                    raise InputError(
                        f"input {name!r}: float pixels must be whole numbers in [0, 255]"
                    )
                return x.astype(np.uint8)
            if x.dtype.kind in "iu":
                if x.min() < 0 or x.max() > 255:
                    raise InputError(f"input {name!r}: integer pixels must lie in [0, 255]")
                return x.astype(np.uint8)
            raise InputError(f"input {name!r}: expected dtype uint8, got {x.dtype}")
        if x.dtype.kind not in "fiu":
            raise InputError(f"input {name!r}: expected dtype {spec.dtype}, got {x.dtype}")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"input {name!r}: contains NaN or infinity")
        return x

    # -- Algorithm 2 ----------------------------------------------------------
    def logits(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Line 1: [y] <- [M](x)."""
        feed = x if self._inputs_checked else self.validate_input(x)
        try:
            (out,) = self.session.run([self.manifest.output_name], {self.manifest.input.name: feed})
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed: {type(exc).__name__}") from exc
        return np.asarray(out, dtype=np.float32)

    def protect(self, logits: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Lines 2-4: c <- Φ⁻¹([y]); c_d <- SampDist(c); wire encoding of c_d."""
        pk = self.manifest.pk
        if self._pool is not None:
            cts = self.transfer.phi_inv(logits)
            fresh = self.scheme.sampdist(pk, cts, self._pool.take(len(cts)))
        elif self._codebook is not None and isinstance(self.transfer, CodebookTransfer):
            slots = self.transfer.slots(logits)
            fresh = self._crypto.split(
                len(slots),
                lambda a, b: self.scheme.sampdist_codebook(pk, self._codebook, slots[a:b]),
            )
        else:
            cts = self.transfer.phi_inv(logits)
            fresh = self._crypto.split(len(cts), lambda a, b: self.scheme.sampdist(pk, cts[a:b]))
        return self.scheme.to_wire(fresh)

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Confused labels for a batch: ``uint8 (N, ciphertext_size)``."""
        return self.protect(self.logits(x))

    def phi(self, wire: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Line 4 in the paper's output form: the 3p one-hot vector (paper profile only)."""
        if not isinstance(self.transfer, OneHotTransfer):
            raise InputError("the one-hot form Φ(c) exists only in the paper profile")
        return self.transfer.phi(self.scheme.from_wire(wire))

    @property
    def ciphertext_size(self) -> int:
        return self.scheme.ciphertext_size

    @property
    def pool(self) -> RerandomizerPool | None:
        """The background re-randomiser pool (secure profile with ``pool_capacity > 0``)."""
        return self._pool
