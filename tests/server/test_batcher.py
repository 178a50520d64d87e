"""MicroBatcher with a fake model: batching, deadlines, bounded queue, failures, drain."""

from __future__ import annotations

import threading
import time
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


@pytest.fixture
def batcher() -> Any:
    b = MicroBatcher(max_batch=8, max_delay_s=0.02, max_queue=16, metrics=ServerMetrics())
    b.start()
    yield b
    b.close(5)


def test_results_match_rows_and_batches_form(batcher: MicroBatcher) -> None:
    model = FakeModel()
    futures = [
        batcher.submit(model, np.full((1, 3), i, np.uint8), onehot=(i == 0)) for i in range(8)
    ]
    results = [f.result(5) for f in futures]
    assert [_decode(r.wire) for r in results] == [[3 * i] for i in range(8)]
    assert results[0].onehot is not None and results[1].onehot is None
    assert max(model.batches) > 1, model.batches
    big = batcher.submit(model, np.ones((20, 2), np.uint8)).result(5)
    assert _decode(big.wire) == [2] * 20  # larger than max_batch: runs alone


def test_never_mixes_models(batcher: MicroBatcher) -> None:
    a, b = FakeModel(), FakeModel()
    futs = [batcher.submit(a if i % 2 else b, np.ones((1, 1), np.uint8)) for i in range(6)]
    for f in futs:
        f.result(5)
    assert sum(a.batches) == 3 and sum(b.batches) == 3


def test_deadline_and_cancel_dropped_before_inference() -> None:
    model = FakeModel()
    model.gate.clear()
    b = MicroBatcher(max_batch=1, max_delay_s=0.0, max_queue=16)
    b.start()
    try:
        blocker = b.submit(model, np.ones((1, 1), np.uint8))
        time.sleep(0.05)
        late = b.submit(model, np.ones((1, 1), np.uint8), timeout_s=0.01)
        gone = b.submit(model, np.ones((1, 1), np.uint8))
        assert gone.cancel()
        time.sleep(0.05)
        model.gate.set()
        blocker.result(5)
        with pytest.raises(DeadlineExpiredError):
            late.result(5)
        assert model.batches == [1]
    finally:
        b.close(5)


def test_queue_bound() -> None:
    model = FakeModel()
    model.gate.clear()
    b = MicroBatcher(max_batch=1, max_delay_s=0.0, max_queue=2)
    b.start()
    try:
        first = b.submit(model, np.ones((1, 1), np.uint8))
        time.sleep(0.05)  # first is now inside the model
        queued = [b.submit(model, np.ones((1, 1), np.uint8)) for _ in range(2)]
        with pytest.raises(QueueFullError):
            b.submit(model, np.ones((1, 1), np.uint8))
        model.gate.set()
        for f in [first, *queued]:
            f.result(5)
    finally:
        b.close(5)


def test_model_failure_fails_batch_only(batcher: MicroBatcher) -> None:
    with pytest.raises(InferenceError):
        batcher.submit(FakeModel(fail=True), np.ones((1, 1), np.uint8)).result(5)
    assert _decode(batcher.submit(FakeModel(), np.ones((1, 1), np.uint8)).result(5).wire) == [1]


def test_close_answers_everything_then_refuses() -> None:
    model = FakeModel(delay_s=0.01)
    b = MicroBatcher(max_batch=2, max_delay_s=0.001, max_queue=64)
    b.start()
    futs = [b.submit(model, np.ones((1, 1), np.uint8)) for _ in range(20)]
    b.close(10)
    assert all(_decode(f.result(0).wire) == [1] for f in futs)
    with pytest.raises(NotReadyError):
        b.submit(model, np.ones((1, 1), np.uint8))
