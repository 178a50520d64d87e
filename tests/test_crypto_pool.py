"""CryptoPool (encryip_runtime.pipeline): how one batch's SampDist is split across threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from encryip_runtime.pipeline import CryptoPool


def _recorder() -> tuple[list[tuple[int, int, str]], Callable[[int, int], Any]]:
    calls: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def run(a: int, b: int) -> Any:
        with lock:
            calls.append((a, b, threading.current_thread().name))
        return np.arange(a, b)

    return calls, run


def test_large_batches_split_in_order_small_ones_stay() -> None:
    pool = CryptoPool(3)
    try:
        calls, run = _recorder()
        out = pool.split(100, run)
        assert np.array_equal(out, np.arange(100))  # shares concatenated in row order
        assert sorted((a, b) for a, b, _ in calls) == [(0, 33), (33, 66), (66, 100)]
        assert any(name.startswith("encryip-sampdist") for *_, name in calls)
        calls.clear()
        assert np.array_equal(pool.split(31, run), np.arange(31))
        assert [(a, b) for a, b, _ in calls] == [(0, 31)]  # under 2 x 16 rows: one thread
        calls.clear()
        pool.split(4, run, min_rows=1)
        assert len(calls) == 3
    finally:
        pool.close()


def test_after_close_everything_runs_on_the_caller() -> None:
    pool = CryptoPool(2)
    pool.close()
    calls, run = _recorder()
    assert np.array_equal(pool.split(200, run), np.arange(200))
    assert [(a, b) for a, b, _ in calls] == [(0, 200)]
    assert calls[0][2] == threading.current_thread().name


def test_one_thread_has_no_helpers() -> None:
    pool = CryptoPool(1)
    calls, run = _recorder()
    pool.split(1000, run)
    assert [(a, b) for a, b, _ in calls] == [(0, 1000)]
    pool.close()
