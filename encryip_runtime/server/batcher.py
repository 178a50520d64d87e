"""Server-side micro-batching: many small requests -> one onnxruntime call -> one crypto call.

Two stages, each its own thread, so that the network of batch k+1 runs while the crypto
of batch k does (onnxruntime and libsodium both release the GIL):

* the **collector** waits for the first request, then, while the protector is still busy
  with earlier batches, up to ``max_delay`` (counted from that request's arrival) for
  more, until ``max_batch`` rows. When the protector is idle it does not wait: a larger
  batch could only start later, so at low load a request pays no batching delay, and
  under load batches fill while the previous ones are being protected. It drops requests whose
  deadline has passed or whose client went away, concatenates the rest and runs the
  network once (``model.logits``);
* the **protector** runs Φ⁻¹ → SampDist → wire once per batch (``model.protect``) and
  hands each request its rows. When it is idle and no request is waiting, the collector
  protects its batch itself (one thread handoff less per request at low load).

Each request carries the model it was validated against; a batch never mixes models,
so a reload swaps models between batches and no request is dropped. The queue is
bounded in requests (``QueueFullError`` beyond it). Nothing here knows gRPC.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import InferenceError
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.status import DeadlineExpiredError, NotReadyError, QueueFullError

__all__ = ["BatchModel", "BatchResult", "MicroBatcher"]

log = logging.getLogger(__name__)


class BatchModel(Protocol):
    """The part of ``ProtectedModel`` the batcher uses."""

    def logits(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]: ...

    def protect(self, logits: npt.NDArray[Any]) -> npt.NDArray[np.uint8]: ...

    def phi(self, wire: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class BatchResult:
    """One request's answer: its rows of wire ciphertexts (and one-hot form if asked)."""

    wire: npt.NDArray[np.uint8]
    onehot: npt.NDArray[np.float32] | None
    # Whatever the caller passed to submit() as ``tag`` (the loaded model's metadata).
    tag: Any
    queue_seconds: float


@dataclass
class _Pending:
    model: BatchModel
    tag: Any
    x: npt.NDArray[Any]
    onehot: bool
    deadline: float | None
    enqueued: float
    future: Future[BatchResult] = field(default_factory=Future)
    started: float = 0.0


@dataclass
class _Batch:
    model: BatchModel
    items: list[_Pending]
    logits: npt.NDArray[Any]


_STOP = object()


class MicroBatcher:
    """Collects requests into batches; ``submit`` returns a Future of ``BatchResult``."""

    def __init__(
        self,
        *,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        metrics: ServerMetrics | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_delay_s >= 0")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._metrics = metrics
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._closed = False
        self._handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
        # Batches handed to the protector and not finished yet (guarded by _cond).
        self._downstream = 0
        self._collector = threading.Thread(
            target=self._collect_loop, name="encryip-batcher", daemon=True
        )
        self._protector = threading.Thread(
            target=self._protect_loop, name="encryip-crypto", daemon=True
        )
        self._started = False

    # -- public ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._collector.start()
            self._protector.start()

    def submit(
        self,
        model: BatchModel,
        x: npt.NDArray[Any],
        *,
        tag: Any = None,
        onehot: bool = False,
        timeout_s: float | None = None,
    ) -> Future[BatchResult]:
        """Queue ``x`` (already validated for ``model``); ``timeout_s`` is the time left."""
        now = time.monotonic()
        item = _Pending(
            model=model,
            tag=tag,
            x=x,
            onehot=onehot,
            deadline=None if timeout_s is None else now + timeout_s,
            enqueued=now,
        )
        with self._cond:
            if self._closed:
                raise NotReadyError("server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"request queue full ({self.max_queue} waiting); retry later")
            self._queue.append(item)
            depth = len(self._queue)
            self._cond.notify()
        if self._metrics is not None:
            self._metrics.queue_depth.set(depth)
        return item.future

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish every queued one, stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._started:
            self._collector.join(timeout_s)
            self._protector.join(timeout_s)
        # Anything still queued (threads not started or timed out) is answered, not lost.
        with self._cond:
            leftovers = list(self._queue)
            self._queue.clear()
        for item in leftovers:
            _fail(item, NotReadyError("server is shutting down"))

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- collector -------------------------------------------------------------------

    def _collect_loop(self) -> None:
        try:
            while True:
                items = self._take()
                if items is None:
                    break
                if items:
                    self._run_network(items)
        finally:
            self._handoff.put(_STOP)

    def _take(self) -> list[_Pending] | None:
        """Block for the next batch: same model, at most max_batch rows (None: closed)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            fill_until = first.enqueued + self.max_delay_s
            while not self._closed:
                rows = 0
                for item in self._queue:
                    if item.model is not first.model:
                        break
                    rows += len(item.x)
                    if rows >= self.max_batch:
                        break
                if rows >= self.max_batch or not self._downstream:
                    break  # full, or nothing to wait for: the protector is idle
                remaining = fill_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[_Pending] = []
            rows = 0
            while self._queue:
                item = self._queue[0]
                if item.model is not first.model:
                    break
                if taken and rows + len(item.x) > self.max_batch:
                    break
                self._queue.popleft()
                taken.append(item)
                rows += len(item.x)
            depth = len(self._queue)
        if self._metrics is not None:
            self._metrics.queue_depth.set(depth)
        now = time.monotonic()
        live: list[_Pending] = []
        for item in taken:
            if not item.future.set_running_or_notify_cancel():
                continue  # the client went away while queued
            if item.deadline is not None and item.deadline <= now:
                _fail(item, DeadlineExpiredError("deadline passed while queued"))
                continue
            item.started = now
            if self._metrics is not None:
                self._metrics.queue_seconds.observe(now - item.enqueued)
            live.append(item)
        return live

    def _infer(self, model: BatchModel, x: npt.NDArray[Any], requests: int) -> npt.NDArray[Any]:
        """One onnxruntime call; any failure becomes ``InferenceError`` (details logged)."""
        try:
            t0 = time.perf_counter()
            logits = model.logits(x)
        except Exception as exc:
            log.error("inference failed for a batch of %d request(s)", requests, exc_info=exc)
            raise InferenceError("inference failed") from None
        if self._metrics is not None:
            self._metrics.inference_seconds.observe(time.perf_counter() - t0)
            self._metrics.batch_rows.observe(len(x))
        return logits

    def _crypto(
        self, model: BatchModel, logits: npt.NDArray[Any], requests: int
    ) -> npt.NDArray[np.uint8]:
        """Φ⁻¹ -> SampDist -> wire for a batch; failures become ``InferenceError``."""
        try:
            t0 = time.perf_counter()
            wire = model.protect(logits)
        except Exception as exc:
            log.error("protection failed for a batch of %d request(s)", requests, exc_info=exc)
            raise InferenceError("protection failed") from None
        if self._metrics is not None:
            self._metrics.crypto_seconds.observe(time.perf_counter() - t0)
            self._metrics.rows.inc(len(wire))
        return wire

    @staticmethod
    def _onehot(model: BatchModel, rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        try:
            return model.phi(rows)
        except Exception as exc:
            log.error("one-hot form failed", exc_info=exc)
            raise InferenceError("one-hot form failed") from None

    def _run_network(self, items: list[_Pending]) -> None:
        model = items[0].model
        try:
            x = items[0].x if len(items) == 1 else np.concatenate([i.x for i in items], axis=0)
            logits = self._infer(model, x, len(items))
        except InferenceError as exc:
            for item in items:
                _fail(item, exc)
            return
        batch = _Batch(model, items, logits)
        with self._cond:
            # Nothing waiting and the protector idle (low load): protecting here saves a
            # thread handoff. Otherwise hand off, so the next batch's network runs while
            # this one's crypto does (the two stages overlap on two cores).
            alone = not self._downstream and not self._queue
            if not alone:
                self._downstream += 1
        if alone:
            self._protect(batch)
            return
        self._handoff.put(batch)

    # -- protector -------------------------------------------------------------------

    def _protect_loop(self) -> None:
        while True:
            batch = self._handoff.get()
            if batch is _STOP:
                return
            try:
                self._protect(batch)
            finally:
                with self._cond:
                    self._downstream -= 1
                    self._cond.notify_all()

    def _protect(self, batch: _Batch) -> None:
        try:
            wire = self._crypto(batch.model, batch.logits, len(batch.items))
        except InferenceError as exc:
            for item in batch.items:
                _fail(item, exc)
            return
        start = 0
        for item in batch.items:
            rows = wire[start : start + len(item.x)]
            start += len(item.x)
            try:
                onehot = self._onehot(batch.model, rows) if item.onehot else None
            except InferenceError as exc:
                _fail(item, exc)
                continue
            queued = item.started - item.enqueued
            item.future.set_result(BatchResult(rows, onehot, item.tag, queued))


def _fail(item: _Pending, exc: BaseException) -> None:
    if item.future.done():
        return
    if not item.future.running() and not item.future.set_running_or_notify_cancel():
        return
    item.future.set_exception(exc)
