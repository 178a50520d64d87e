"""Algorithm 2 without a server: ONNX logits -> Φ⁻¹ -> SampDist -> wire ciphertexts.

The gRPC server and in-process users share this one code path. It never sees a
secret key: ``load`` refuses a directory holding key files or a vault.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.scheme import Ciphertexts, Elements
from encryip_runtime.exceptions import InferenceError, InputError, ModelError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.secrets import refuse_secret_material
from encryip_runtime.transfer import OneHotTransfer

__all__ = ["ProtectedModel", "RerandomizerPool", "check_no_secrets", "resolve_release_dir"]

log = logging.getLogger(__name__)

# Below this many rows per thread, handing work to another thread costs more than it saves.
_MIN_ROWS_PER_THREAD = 8


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
        # FIFO of (g1^r, g2^r, h^r) batches; ``_size`` counts their rows.
        self._parts: collections.deque[tuple[Elements, Elements, Elements]] = collections.deque()
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
                self._parts.append((r[0], r[1], r[2]))
                self._size += want

    def take(self, count: int) -> tuple[Elements, Elements, Elements]:
        """``count`` triples nobody else ever gets (inline when the pool is short)."""
        got: list[tuple[Elements, Elements, Elements]] = []
        with self._lock:
            need = count
            while need and self._parts:
                head = self._parts[0]
                if len(head[0]) <= need:
                    self._parts.popleft()
                    got.append(head)
                    need -= len(head[0])
                else:
                    got.append((head[0][:need], head[1][:need], head[2][:need]))
                    self._parts[0] = (head[0][need:], head[1][need:], head[2][need:])
                    need = 0
            self._size -= count - need
            self._wake.notify()
        if need:  # pool ran dry: compute the rest inline
            got.append(self._model.scheme.rerandomizers(self._model.manifest.pk, need))
        if len(got) == 1:
            return got[0]
        return (
            np.concatenate([g[0] for g in got]),
            np.concatenate([g[1] for g in got]),
            np.concatenate([g[2] for g in got]),
        )

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
    ):
        self.manifest = manifest
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
        # Helpers for one batch's SampDist; the calling thread takes a share itself.
        self._crypto_pool: ThreadPoolExecutor | None = None
        if crypto_threads > 1:
            self._crypto_pool = ThreadPoolExecutor(
                crypto_threads - 1, thread_name_prefix="encryip-sampdist"
            )
        self._crypto_threads = crypto_threads
        self._pool: RerandomizerPool | None = None
        if pool_capacity > 0 and manifest.profile == "secure":
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
        return cls(manifest, session, d, pool_capacity=pool_capacity, crypto_threads=crypto_threads)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._crypto_pool is not None:
            self._crypto_pool.shutdown(wait=False)

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
        feed = self.validate_input(x)
        try:
            (out,) = self.session.run([self.manifest.output_name], {self.manifest.input.name: feed})
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed: {type(exc).__name__}") from exc
        return np.asarray(out, dtype=np.float32)

    def protect(self, logits: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Lines 2-4: c <- Φ⁻¹([y]); c_d <- SampDist(c); wire encoding of c_d."""
        cts = self.transfer.phi_inv(logits)
        if self._pool is not None:
            fresh = self.scheme.sampdist(self.manifest.pk, cts, self._pool.take(len(cts)))
        else:
            fresh = self._sampdist(cts)
        return self.scheme.to_wire(fresh)

    def _sampdist(self, cts: Ciphertexts) -> Ciphertexts:
        """SampDist of a batch, split across ``crypto_threads`` when it is large enough."""
        parts = min(self._crypto_threads, len(cts) // _MIN_ROWS_PER_THREAD)
        if self._crypto_pool is None or parts < 2:
            return self.scheme.sampdist(self.manifest.pk, cts)
        chunks = np.array_split(cts, parts)
        helpers = [
            self._crypto_pool.submit(self.scheme.sampdist, self.manifest.pk, c) for c in chunks[1:]
        ]
        first = self.scheme.sampdist(self.manifest.pk, chunks[0])
        return np.concatenate([first, *(h.result() for h in helpers)])

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Confused labels for a batch: ``uint8 (N, ciphertext_size)``."""
        return self.protect(self.logits(x))

    def phi(self, wire: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Line 4 in the paper's output form: the 3p one-hot vector (paper profile only)."""
        if not isinstance(self.transfer, OneHotTransfer):
            raise InputError("the one-hot form Φ(c) exists only in the paper profile")
        return self.transfer.phi(self.scheme.from_wire(wire))

    def unprotected_labels(self, x: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """BENCHMARK ONLY: plain argmax of the network, no crypto. Never serve this."""
        return np.argmax(self.logits(x), axis=1).astype(np.int64)

    @property
    def ciphertext_size(self) -> int:
        return self.scheme.ciphertext_size

    @property
    def pool(self) -> RerandomizerPool | None:
        """The background re-randomiser pool (secure profile with ``pool_capacity > 0``)."""
        return self._pool
