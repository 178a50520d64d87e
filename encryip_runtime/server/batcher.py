"""Server-side micro-batching: many small requests -> one onnxruntime call -> one crypto call.

All the bookkeeping runs on the server's event loop; only the work runs on threads:

* ``submit`` (on the loop) appends the request to a queue and, if a batch thread is free,
  hands it a batch at once. No thread is woken per request: requests that arrive while
  the threads are busy simply wait on the loop's queue, so batches grow with the load.
* a batch is the requests at the head of the queue (same model, up to ``max_batch``
  rows; one request larger than that runs alone). Requests whose deadline passed or
  whose client went away are dropped when the batch forms, before any inference.
* each of the ``threads`` **batch threads** runs a whole batch: the network once
  (``model.logits``), then Φ⁻¹ → SampDist → wire once (``model.protect``), and answers
  all the batch's requests with **one** wake-up of the event loop. onnxruntime and the
  SampDist C code release the GIL, so with two threads one batch's crypto runs while the
  next one's network does.
* when no thread is busy a request is dispatched at once (no batching delay at low
  load). While one is busy, a second thread takes a batch only when it is full or its
  first request has waited ``max_delay``: under load a partial batch waits a little to
  fill rather than paying a whole batch's fixed cost for one row.

A batch never mixes models, so a reload swaps models between batches and no request is
dropped. The queue is bounded in requests (``QueueFullError`` beyond it); a stuck model
fills it but never blocks the loop. Nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class _Batch:
    model: BatchModel
    items: list[_Pending]
    started: float


# What a batch thread hands back: each request with its result or its error.
_Answers = list[tuple[_Pending, "BatchResult | BaseException"]]

_STOP: Any = object()


class MicroBatcher:
    """Collects requests into batches; ``submit`` (on an event loop) returns a future.

    One batcher serves one event loop: the one ``submit`` is first called on."""

    def __init__(
        self,
        *,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        threads: int = 2,
        metrics: ServerMetrics | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or threads < 1 or max_delay_s < 0:
            raise ValueError("max_batch, max_queue and threads must be >= 1, max_delay_s >= 0")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._metrics = metrics
        # Loop-side state: touched only on the event loop (no locks needed).
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_rows = 0
        self._busy = 0  # batches handed to threads and not answered yet
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._drained = threading.Event()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"encryip-batch-{i}", daemon=True)
            for i in range(threads)
        ]
        self._started = False

    # -- public ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()

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
        if len(self._pending) >= self.max_queue:
            raise QueueFullError(f"request queue full ({self.max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("a MicroBatcher serves one event loop")
        now = time.monotonic()
        item = _Pending(
            model=model,
            tag=tag,
            x=x,
            onehot=onehot,
            deadline=None if timeout_s is None else now + timeout_s,
            enqueued=now,
            future=loop.create_future(),
        )
        self._pending.append(item)
        self._pending_rows += len(x)
        self._dispatch()
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._pending))
        return item.future

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, answer every queued one, stop the threads. Call it from
        any thread but the event loop's (it waits for the loop to drain the queue)."""
        self._closed = True
        waits = self._started and self._loop is not None and not _on_loop(self._loop)
        if waits and self._post(self._check_drained):
            self._drained.wait(timeout_s)
        # Whatever is still queued (threads not started, stuck or timed out) is answered.
        if self._loop is not None:
            if _on_loop(self._loop):
                self._abandon()
            else:
                self._post(self._abandon)
        for _ in self._threads:
            self._jobs.put(_STOP)
        if self._started:
            end = None if timeout_s is None else time.monotonic() + timeout_s
            for t in self._threads:
                t.join(None if end is None else max(0.0, end - time.monotonic()))

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return len(self._pending)

    # -- on the event loop -----------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand batches to free threads: at once when none is busy (or when closing),
        else only a full batch or one whose first request has waited ``max_delay``."""
        while self._pending and self._started and self._busy < len(self._threads):
            if self._busy and not self._closed and self._pending_rows < self.max_batch:
                wait = self._pending[0].enqueued + self.max_delay_s - time.monotonic()
                if wait > 0:
                    if self._timer is None:  # an earlier timer re-checks soon enough
                        assert self._loop is not None
                        self._timer = self._loop.call_later(wait, self._on_timer)
                    return
            batch = self._take()
            if batch is not None:
                self._busy += 1
                self._jobs.put(batch)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self) -> _Batch | None:
        """The next batch from the head of the queue (None: every request taken had
        expired or was cancelled)."""
        first = self._pending[0]
        now = time.monotonic()
        items: list[_Pending] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            if item.model is not first.model or (items and rows + len(item.x) > self.max_batch):
                break
            self._pending.popleft()
            self._pending_rows -= len(item.x)
            if item.future.done():
                continue  # the client went away while queued
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(DeadlineExpiredError("deadline passed while queued"))
                continue
            items.append(item)
            rows += len(item.x)
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._pending))
        return _Batch(first.model, items, now) if items else None

    def _finish(self, answers: _Answers) -> None:
        """A batch thread is done: answer its requests, give it the next batch."""
        _settle(answers)
        self._busy -= 1
        self._check_drained()

    def _check_drained(self) -> None:
        self._dispatch()
        if self._closed and not self._pending and not self._busy:
            self._drained.set()

    def _abandon(self) -> None:
        _settle([(item, NotReadyError("server is shutting down")) for item in self._pending])
        self._pending.clear()
        self._pending_rows = 0

    def _post(self, fn: Callable[..., None], *args: Any) -> bool:
        """Run ``fn(*args)`` on the loop; False if the loop is closed (nobody awaits)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    # -- on a batch thread -----------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._jobs.get()
            if batch is _STOP:
                return
            try:
                answers = self._run(batch)
            except Exception as exc:  # a bug here must not kill the thread (the batcher
                # would stall with the thread counted busy for ever)
                log.error("batch of %d request(s) failed", len(batch.items), exc_info=exc)
                failure = InferenceError("batch failed")
                answers = [(item, failure) for item in batch.items]
            self._post(self._finish, answers)

    def _run(self, batch: _Batch) -> _Answers:
        items = batch.items
        if self._metrics is not None:  # here, not on the event loop: it is off the hot path
            for item in items:
                self._metrics.queue_seconds.observe(batch.started - item.enqueued)
        try:
            x = items[0].x if len(items) == 1 else np.concatenate([i.x for i in items], axis=0)
            logits = self._infer(batch.model, x, len(items))
            wire = self._crypto(batch.model, logits, len(items))
        except InferenceError as exc:
            return [(item, exc) for item in items]
        answers: _Answers = []
        start = 0
        for item in items:
            rows = wire[start : start + len(item.x)]
            start += len(item.x)
            try:
                onehot = self._onehot(batch.model, rows) if item.onehot else None
            except InferenceError as exc:
                answers.append((item, exc))
                continue
            queued = batch.started - item.enqueued
            answers.append((item, BatchResult(rows, onehot, item.tag, queued)))
        return answers

    def _step(self, what: str, fn: Any, arg: Any, requests: int) -> tuple[Any, float]:
        """``fn(arg)`` and its seconds (its thread's CPU time goes to the metrics); any
        failure becomes ``InferenceError`` (logged)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            out = fn(arg)
        except Exception as exc:
            log.error("%s failed for a batch of %d request(s)", what, requests, exc_info=exc)
            raise InferenceError(f"{what} failed") from None
        if self._metrics is not None:
            self._metrics.stage_cpu[what].inc(time.thread_time() - c0)
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


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _settle(answers: _Answers) -> None:
    for item, outcome in answers:
        if item.future.done():
            continue  # cancelled meanwhile
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)
