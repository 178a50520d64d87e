"""Server-side micro-batching: many small requests -> one onnxruntime call -> one crypto call.

Requests are submitted and answered on the server's event loop; the work runs on two
threads, so that the network of batch k+1 runs while the crypto of batch k does
(onnxruntime and the SampDist C code both release the GIL):

* ``submit`` (on the loop) puts the request in a thread-safe inbox and returns an
  asyncio future. Nothing else happens on the loop: a slow or stuck model never blocks
  health checks or the reading of new requests.
* the **collector** takes the first request waiting, then whatever else waits (same
  model, up to ``max_batch`` rows); while the protector is still busy with earlier
  batches it waits up to ``max_delay`` (counted from the first request's arrival) for
  more. When the protector is idle it does not wait: a larger batch could only start
  later, so at low load a request pays no batching delay, and under load batches fill
  while the previous ones are being protected. It drops requests whose deadline has
  passed or whose client went away, concatenates the rest and runs the network once
  (``model.logits``);
* the **protector** runs Φ⁻¹ → SampDist → wire once per batch (``model.protect``) and
  answers all the batch's requests with **one** wake-up of the event loop. The collector
  hands a batch over only when it is full and more requests wait (compute-bound: the two
  stages then overlap); a partial batch it protects itself (request-bound: a thread
  handoff and GIL contention saved).

Each request carries the model it was validated against; a batch never mixes models,
so a reload swaps models between batches and no request is dropped. The inbox is
bounded in requests (``QueueFullError`` beyond it). Nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
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
    future: asyncio.Future[BatchResult]
    loop: asyncio.AbstractEventLoop
    started: float = 0.0


@dataclass
class _Batch:
    model: BatchModel
    items: list[_Pending]
    logits: npt.NDArray[Any]


# What the worker threads hand back: each request with its result or its error.
_Answers = list[tuple[_Pending, "BatchResult | BaseException"]]

_STOP: Any = object()


class MicroBatcher:
    """Collects requests into batches; ``submit`` (on an event loop) returns a future."""

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
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Collector only: the request that did not fit the last batch (or _STOP).
        self._carry: Any = None
        self._closed = False
        self._handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
        # Batches handed to the protector and not finished yet (guarded by _lock).
        self._lock = threading.Lock()
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
    ) -> asyncio.Future[BatchResult]:
        """Queue ``x`` (already validated for ``model``); call on the event loop that will
        await the result. ``timeout_s`` is the time the request has left."""
        if self._closed:
            raise NotReadyError("server is shutting down")
        depth = self._inbox.qsize()
        if depth >= self.max_queue:
            raise QueueFullError(f"request queue full ({self.max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        item = _Pending(
            model=model,
            tag=tag,
            x=x,
            onehot=onehot,
            deadline=None if timeout_s is None else now + timeout_s,
            enqueued=now,
            future=loop.create_future(),
            loop=loop,
        )
        self._inbox.put(item)
        if self._metrics is not None:
            self._metrics.queue_depth.set(depth + 1)
        return item.future

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, answer every queued one, stop the threads."""
        self._closed = True
        self._inbox.put(_STOP)
        if self._started:
            self._collector.join(timeout_s)
            self._protector.join(timeout_s)
        # Anything still queued (threads not started or timed out) is answered, not lost.
        leftovers: _Answers = []
        if self._carry is not None and self._carry is not _STOP:
            leftovers.append((self._carry, NotReadyError("server is shutting down")))
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append((item, NotReadyError("server is shutting down")))
        _answer(leftovers)

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        carry = self._carry is not None and self._carry is not _STOP
        return self._inbox.qsize() + carry

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

    def _next(self, wait_s: float | None) -> Any:
        """The next request (or _STOP): the carried one first; None if none arrives in
        ``wait_s`` seconds (``None``: wait for ever, 0: do not wait)."""
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        try:
            if wait_s is None:
                return self._inbox.get()
            if wait_s <= 0:
                return self._inbox.get_nowait()
            return self._inbox.get(timeout=wait_s)
        except queue.Empty:
            return None

    def _take(self) -> list[_Pending] | None:
        """Block for the next batch: same model, at most max_batch rows (None: closed)."""
        first = self._next(None)
        if first is _STOP:
            return None
        taken = [first]
        rows = len(first.x)
        fill_until = first.enqueued + self.max_delay_s
        while rows < self.max_batch:
            with self._lock:
                busy = self._downstream > 0
            # Wait for a fuller batch only while the protector is busy anyway.
            nxt = self._next(fill_until - time.monotonic() if busy else 0)
            if nxt is None:
                break
            if nxt is _STOP or nxt.model is not first.model or rows + len(nxt.x) > self.max_batch:
                self._carry = nxt  # starts the next batch (or stops after this one)
                break
            taken.append(nxt)
            rows += len(nxt.x)
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._inbox.qsize())
        now = time.monotonic()
        live: list[_Pending] = []
        expired: _Answers = []
        for item in taken:
            if item.future.cancelled():
                continue  # the client went away while queued
            if item.deadline is not None and item.deadline <= now:
                expired.append((item, DeadlineExpiredError("deadline passed while queued")))
                continue
            item.started = now
            if self._metrics is not None:
                self._metrics.queue_seconds.observe(now - item.enqueued)
            live.append(item)
        _answer(expired)
        return live

    @staticmethod
    def _step(what: str, fn: Any, arg: Any, requests: int) -> tuple[Any, float]:
        """``fn(arg)`` and its seconds; any failure becomes ``InferenceError`` (logged)."""
        t0 = time.perf_counter()
        try:
            out = fn(arg)
        except Exception as exc:
            log.error("%s failed for a batch of %d request(s)", what, requests, exc_info=exc)
            raise InferenceError(f"{what} failed") from None
        return out, time.perf_counter() - t0

    def _infer(self, model: BatchModel, x: npt.NDArray[Any], requests: int) -> npt.NDArray[Any]:
        """One onnxruntime call for the batch."""
        logits, seconds = self._step("inference", model.logits, x, requests)
        if self._metrics is not None:
            self._metrics.inference_seconds.observe(seconds)
            self._metrics.batch_rows.observe(len(x))
        return logits

    def _crypto(
        self, model: BatchModel, logits: npt.NDArray[Any], requests: int
    ) -> npt.NDArray[np.uint8]:
        """Φ⁻¹ -> SampDist -> wire for the batch."""
        wire, seconds = self._step("protection", model.protect, logits, requests)
        if self._metrics is not None:
            self._metrics.crypto_seconds.observe(seconds)
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
            _answer([(item, exc) for item in items])
            return
        batch = _Batch(model, items, logits)
        with self._lock:
            # Hand off (the next batch's network then runs while this one's crypto does)
            # only when batches come full and more wait: then compute is the bottleneck and
            # the two stages overlap on two cores. A partial batch means requests, not
            # compute, are the bottleneck: protecting here saves a thread handoff and GIL
            # contention (benchmarks/serving.py, CNN: +10-20 % at batch 1, concurrency 32;
            # protecting full batches here too cost 15-40 % at batch 32).
            full = len(logits) >= self.max_batch
            waiting = self._carry is not None or not self._inbox.empty()
            inline = not (full and (waiting or self._downstream))
            if not inline:
                self._downstream += 1
        if inline:
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
                with self._lock:
                    self._downstream -= 1

    def _protect(self, batch: _Batch) -> None:
        try:
            wire = self._crypto(batch.model, batch.logits, len(batch.items))
        except InferenceError as exc:
            _answer([(item, exc) for item in batch.items])
            return
        answers: _Answers = []
        start = 0
        for item in batch.items:
            rows = wire[start : start + len(item.x)]
            start += len(item.x)
            try:
                onehot = self._onehot(batch.model, rows) if item.onehot else None
            except InferenceError as exc:
                answers.append((item, exc))
                continue
            queued = item.started - item.enqueued
            answers.append((item, BatchResult(rows, onehot, item.tag, queued)))
        _answer(answers)


def _answer(answers: _Answers) -> None:
    """Settle the futures on their event loop: one wake-up per loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, _Answers] = {}
    for item, outcome in answers:
        by_loop.setdefault(item.loop, []).append((item, outcome))
    for loop, group in by_loop.items():
        # A closed loop raises RuntimeError: nobody awaits these any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, group)


def _settle(answers: _Answers) -> None:
    for item, outcome in answers:
        if item.future.done():
            continue  # cancelled meanwhile
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)
