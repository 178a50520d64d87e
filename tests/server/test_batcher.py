"""MicroBatcher with a fake model: batching, deadlines, bounded queue, failures, drain.

The batcher is submitted to and answers on an event loop (as in the server): each test
runs its body with ``asyncio.run``; the fake model runs on the batcher's threads. Tests
of what waits in the queue use one batch thread, so that nothing reaches a second one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from encryip_runtime.exceptions import InferenceError
from encryip_runtime.server.batcher import MicroBatcher
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.status import DeadlineExpiredError, NotReadyError, QueueFullError


class FakeModel:
    """logits = row sums; wire = the sum as 4 bytes; records batch sizes."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def logits(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        self.gate.wait(5)
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(len(x))
        time.sleep(self.delay_s)
        return x.reshape(len(x), -1).sum(axis=1).astype(np.int64)

    def protect(self, logits: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        return logits.astype("<u4").view(np.uint8).reshape(len(logits), 4)

    def phi(self, wire: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return wire.astype(np.float32)


def _decode(wire: npt.NDArray[np.uint8]) -> list[int]:
    return [int(v) for v in wire.copy().view("<u4").reshape(-1)]


def run(body: Callable[[MicroBatcher], Awaitable[None]], **kw: Any) -> None:
    """Run ``body(batcher)`` on a fresh event loop; the batcher is closed afterwards."""
    settings: dict[str, Any] = {"max_batch": 8, "max_delay_s": 0.02, "max_queue": 16}
    settings.update(kw)
    b = MicroBatcher(metrics=ServerMetrics(), **settings)
    b.start()

    async def main() -> None:
        try:
            await body(b)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, b.close, 5)

    asyncio.run(main())


async def result(f: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(f, 5)


def test_results_match_rows_and_batches_form() -> None:
    async def body(b: MicroBatcher) -> None:
        model = FakeModel()
        futures = [b.submit(model, np.full((1, 3), i, np.uint8), onehot=(i == 0)) for i in range(8)]
        results = [await result(f) for f in futures]
        assert [_decode(r.wire) for r in results] == [[3 * i] for i in range(8)]
        assert results[0].onehot is not None and results[1].onehot is None
        assert max(model.batches) > 1, model.batches
        big = await result(b.submit(model, np.ones((20, 2), np.uint8)))
        assert _decode(big.wire) == [2] * 20  # larger than max_batch: runs alone

    run(body)


def test_never_mixes_models() -> None:
    async def body(b: MicroBatcher) -> None:
        a, c = FakeModel(), FakeModel()
        futs = [b.submit(a if i % 2 else c, np.ones((1, 1), np.uint8)) for i in range(6)]
        for f in futs:
            await result(f)
        assert sum(a.batches) == 3 and sum(c.batches) == 3

    run(body)


def test_deadline_and_cancel_dropped_before_inference() -> None:
    async def body(b: MicroBatcher) -> None:
        model = FakeModel()
        model.gate.clear()
        blocker = b.submit(model, np.ones((1, 1), np.uint8))
        await asyncio.sleep(0.05)
        late = b.submit(model, np.ones((1, 1), np.uint8), timeout_s=0.01)
        gone = b.submit(model, np.ones((1, 1), np.uint8))
        assert gone.cancel()
        await asyncio.sleep(0.05)
        model.gate.set()
        await result(blocker)
        with pytest.raises(DeadlineExpiredError):
            await result(late)
        assert model.batches == [1]

    run(body, max_batch=1, max_delay_s=0.0, threads=1)


def test_queue_bound() -> None:
    async def body(b: MicroBatcher) -> None:
        model = FakeModel()
        model.gate.clear()
        first = b.submit(model, np.ones((1, 1), np.uint8))
        await asyncio.sleep(0.05)  # first is now inside the model
        queued = [b.submit(model, np.ones((1, 1), np.uint8)) for _ in range(2)]
        assert b.depth == 2
        with pytest.raises(QueueFullError):
            b.submit(model, np.ones((1, 1), np.uint8))
        model.gate.set()
        for f in [first, *queued]:
            await result(f)

    run(body, max_batch=1, max_delay_s=0.0, max_queue=2, threads=1)


def test_model_failure_fails_batch_only() -> None:
    async def body(b: MicroBatcher) -> None:
        with pytest.raises(InferenceError):
            await result(b.submit(FakeModel(fail=True), np.ones((1, 1), np.uint8)))
        ok = await result(b.submit(FakeModel(), np.ones((1, 1), np.uint8)))
        assert _decode(ok.wire) == [1]

    run(body)


def test_unexpected_error_in_a_batch_thread_fails_the_batch_not_the_batcher() -> None:
    """A bug outside the model calls (here: rows that cannot be concatenated) answers
    that batch with InferenceError; the thread lives on and serves the next batch."""

    async def body(b: MicroBatcher) -> None:
        model = FakeModel()
        model.gate.clear()
        blocker = b.submit(model, np.ones((1, 1), np.uint8))
        await asyncio.sleep(0.05)
        odd = [b.submit(model, np.ones((1, n), np.uint8)) for n in (2, 3)]  # one batch
        model.gate.set()
        await result(blocker)
        for f in odd:
            with pytest.raises(InferenceError):
                await result(f)
        ok = await result(b.submit(model, np.ones((1, 2), np.uint8)))
        assert _decode(ok.wire) == [2]

    run(body, threads=1)


def test_one_loop_wakeup_per_batch() -> None:
    """A batch of 8 single-row requests is answered with one call into the loop."""

    async def body(b: MicroBatcher) -> None:
        model = FakeModel()
        model.gate.clear()
        loop = asyncio.get_running_loop()
        calls = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(*args, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        blocker = b.submit(model, np.ones((1, 1), np.uint8))
        await asyncio.sleep(0.05)
        futs = [b.submit(model, np.ones((1, 1), np.uint8)) for _ in range(8)]
        model.gate.set()
        for f in [blocker, *futs]:
            await result(f)
        assert sorted(model.batches) == [1, 8]  # the full batch went to the second thread
        assert calls == 2, calls

    run(body)


def test_close_answers_everything_then_refuses() -> None:
    async def body(b: MicroBatcher) -> None:
        model = FakeModel(delay_s=0.01)
        futs = [b.submit(model, np.ones((1, 1), np.uint8)) for _ in range(20)]
        await asyncio.get_running_loop().run_in_executor(None, b.close, 10)
        for f in futs:
            assert _decode((await result(f)).wire) == [1]
        with pytest.raises(NotReadyError):
            b.submit(model, np.ones((1, 1), np.uint8))

    run(body, max_batch=2, max_delay_s=0.001, max_queue=64)


def test_close_before_start_answers_queued_requests() -> None:
    async def main() -> None:
        b = MicroBatcher(max_batch=2, max_delay_s=0.0, max_queue=8)
        f = b.submit(FakeModel(), np.ones((1, 1), np.uint8))
        b.close(1)
        with pytest.raises(NotReadyError):
            await result(f)

    asyncio.run(main())


def test_full_batch_goes_to_a_free_thread_at_once_partial_waits_max_delay() -> None:
    """While one thread is busy, a full batch goes to the other thread at once (its
    network and crypto overlap the first); a partial batch waits up to max_delay for
    more rows first, then goes too."""

    async def body(b: MicroBatcher) -> None:
        slow, fast = FakeModel(), FakeModel()
        slow.gate.clear()
        blocker = b.submit(slow, np.ones((1, 1), np.uint8))
        await asyncio.sleep(0.05)  # blocker is inside the model on one thread
        t0 = time.monotonic()
        partial = b.submit(fast, np.ones((1, 1), np.uint8))
        assert b.depth == 1  # waits to fill
        assert _decode((await result(partial)).wire) == [1]
        assert time.monotonic() - t0 >= 0.2 * 0.9  # ... for max_delay, then ran alone
        full = [b.submit(fast, np.ones((1, 1), np.uint8)) for _ in range(4)]
        assert b.depth == 0  # dispatched on the fourth row, no waiting
        for f in full:
            await result(f)
        assert fast.batches == [1, 4]
        assert not blocker.done()
        slow.gate.set()
        await result(blocker)

    run(body, max_batch=4, max_delay_s=0.2, threads=2)


def test_idle_batcher_dispatches_at_once() -> None:
    """No thread busy: a lone request runs at once, not after max_delay."""

    async def body(b: MicroBatcher) -> None:
        t0 = time.monotonic()
        await result(b.submit(FakeModel(), np.ones((1, 1), np.uint8)))
        assert time.monotonic() - t0 < 1.0

    run(body, max_batch=8, max_delay_s=5.0)


def test_batches_run_on_two_threads_at_once() -> None:
    """Two full batches run concurrently (each waits for the other inside the model)."""

    class Rendezvous(FakeModel):
        def __init__(self) -> None:
            super().__init__()
            self.barrier = threading.Barrier(2, timeout=5)

        def logits(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
            self.barrier.wait()  # raises BrokenBarrierError unless both batches are in
            return super().logits(x)

    async def body(b: MicroBatcher) -> None:
        model = Rendezvous()
        futs = [b.submit(model, np.ones((2, 1), np.uint8)) for _ in range(2)]
        for f in futs:
            assert _decode((await result(f)).wire) == [1, 1]

    run(body, max_batch=2, max_delay_s=0.0, threads=2)


def test_submit_from_a_second_event_loop_is_refused() -> None:
    b = MicroBatcher(max_batch=1, max_delay_s=0.0, max_queue=4)

    async def submit() -> None:
        b.submit(FakeModel(), np.ones((1, 1), np.uint8))

    asyncio.run(submit())
    with pytest.raises(RuntimeError, match="one event loop"):
        asyncio.run(submit())
