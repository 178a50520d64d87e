"""Crypto throughput: SampDist and Dec per profile, next to the raw primitive's cost.

Run standalone (not part of the test suite)::

    .venv/bin/python -m benchmarks.crypto          # or: python benchmarks/crypto.py

One core: both profiles run on the calling thread (numpy gathers for ``paper``,
one libsodium call at a time for ``secure``). The raw primitive is measured in
the same run so the ratio is meaningful on any machine:

* paper: a bare numpy gather of ``(N, 3)`` int64 through a table (the least any
  SampDist on Z_p^* log tables can cost);
* secure: three ``crypto_scalarmult_ristretto255`` calls per row through
  pysodium's raw ctypes handle in a tight loop (a SampDist is three scalar
  multiplications; ours uses the faster fixed-base one for ``g1^r``).

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/crypto.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from encryip_runtime.crypto import make_scheme

__all__ = ["main"]


def per_second(fn: Callable[[], Any], items: int, *, min_time: float = 0.3) -> float:
    """Items per second: the median over repeats of a loop lasting at least ``min_time``."""
    fn()  # warm up (tables, caches, lazy imports)
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / 5 or loops >= 1 << 20:
            break
        loops *= 2
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        rates.append(items * loops / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_paper(batches: list[int]) -> dict[str, Any]:
    s = make_scheme("paper", 10)
    fam = s.gen(3)
    sk = fam.keys[1]
    table = s.group.exp_table
    rows: dict[str, Any] = {}
    for n in batches:
        cts = s.enc(fam.pk, s.group.random_elements(n))
        idx = np.random.default_rng(0).integers(0, len(table), size=(n, 3))
        rows[str(n)] = {
            "sampdist_per_s": per_second(lambda c=cts: s.sampdist(fam.pk, c), n),
            "dec_per_s": per_second(lambda c=cts: s.dec(sk, c), n),
            "raw_gather_per_s": per_second(lambda i=idx: table[i], n),
        }
    return rows


def _raw_scalarmult_loop(n: int) -> Callable[[], None]:
    """``3n`` crypto_scalarmult_ristretto255 calls via pysodium's ctypes handle."""
    import pysodium

    lib = pysodium.sodium
    fn = lib.crypto_scalarmult_ristretto255
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    s = make_scheme("secure", 10)
    points = s.group.random_elements(3)
    scalars = s.group.random_scalars(n)
    out = np.empty((n, 3, 32), dtype=np.uint8)
    po, pk, pp = int(out.ctypes.data), int(scalars.ctypes.data), int(points.ctypes.data)

    def run(keep: tuple[Any, ...] = (out, scalars, points)) -> None:
        # ``keep`` holds the buffers alive: the loop only has their raw addresses
        for i in range(n):
            k = pk + 32 * i
            o = po + 96 * i
            fn(o, k, pp)
            fn(o + 32, k, pp + 32)
            fn(o + 64, k, pp + 64)

    return run


def bench_secure(batches: list[int]) -> dict[str, Any]:
    s = make_scheme("secure", 10)
    fam = s.gen(3)
    sk = fam.keys[1]
    rows: dict[str, Any] = {}
    for n in batches:
        cts = s.enc(fam.pk, s.group.random_elements(n))
        rows[str(n)] = {
            "sampdist_per_s": per_second(lambda c=cts: s.sampdist(fam.pk, c), n),
            "dec_per_s": per_second(lambda c=cts: s.dec(sk, c), n),
            "raw_3_scalarmult_per_s": per_second(_raw_scalarmult_loop(n), n),
        }
    return rows


def _fmt(rate: float) -> str:
    return f"{rate / 1e6:9.2f} M/s" if rate >= 1e6 else f"{rate / 1e3:9.2f} k/s"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    paper = bench_paper([1, 1024] if quick else [1, 1024, 1_000_000])
    secure = bench_secure([1, 1024])
    print(f"{'profile':8} {'batch':>9} {'SampDist':>14} {'Dec':>14} {'raw primitive':>14}  raw is")
    for n, r in paper.items():
        print(
            f"{'paper':8} {n:>9} {_fmt(r['sampdist_per_s']):>14} {_fmt(r['dec_per_s']):>14} "
            f"{_fmt(r['raw_gather_per_s']):>14}  numpy gather of (N, 3)"
        )
    for n, r in secure.items():
        print(
            f"{'secure':8} {n:>9} {_fmt(r['sampdist_per_s']):>14} {_fmt(r['dec_per_s']):>14} "
            f"{_fmt(r['raw_3_scalarmult_per_s']):>14}  3 x crypto_scalarmult_ristretto255"
        )
    big = paper["1000000"] if "1000000" in paper else paper["1024"]
    sec = secure["1024"]
    # time per row of our batch SampDist / time per row of the raw primitive
    ratio = sec["raw_3_scalarmult_per_s"] / sec["sampdist_per_s"]
    result = {
        "benchmark": "crypto",
        "paper_sampdist_per_s": big["sampdist_per_s"],
        "paper_dec_per_s": big["dec_per_s"],
        "paper_batch": 1_000_000 if "1000000" in paper else 1024,
        "secure_sampdist_per_s": sec["sampdist_per_s"],
        "secure_dec_per_s": sec["dec_per_s"],
        "secure_raw_3_scalarmult_per_s": sec["raw_3_scalarmult_per_s"],
        "secure_overhead_ratio": ratio,
        "targets": {
            "paper_sampdist_per_s": 10_000_000,
            "secure_overhead_ratio_max": 1.3,
        },
        "targets_met": {
            "paper": big["sampdist_per_s"] >= 10_000_000,
            "secure": ratio <= 1.3,
        },
        "detail": {"paper": paper, "secure": secure},
        "env": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
