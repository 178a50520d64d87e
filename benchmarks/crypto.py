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

The secure SampDist is measured on both backends in the same run: the native
fixed-base tables (``encryip_runtime/crypto/_r255.c``, the default when built) and
libsodium (``ENCRYIP_NATIVE=0``). ``secure_sampdist_per_s`` is the default path.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/crypto.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from encryip_runtime.crypto import make_scheme, r255_native

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


@contextmanager
def _backend(native: bool) -> Iterator[None]:
    """Run the block on the native backend or on libsodium (``ENCRYIP_NATIVE``)."""
    old = os.environ.get(r255_native.ENV_VAR)
    os.environ[r255_native.ENV_VAR] = "1" if native else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[r255_native.ENV_VAR]
        else:
            os.environ[r255_native.ENV_VAR] = old


def bench_secure(batches: list[int]) -> dict[str, Any]:
    s = make_scheme("secure", 10)
    fam = s.gen(3)
    sk = fam.keys[1]
    native = r255_native.available()
    rows: dict[str, Any] = {}
    for n in batches:
        cts = s.enc(fam.pk, s.group.random_elements(n))
        sampdist = lambda c=cts: s.sampdist(fam.pk, c)  # noqa: E731
        with _backend(False):
            sodium = per_second(sampdist, n)
        row: dict[str, Any] = {"sampdist_libsodium_per_s": sodium, "sampdist_native_per_s": None}
        if native:
            with _backend(True):
                row["sampdist_native_per_s"] = per_second(sampdist, n)
        row["sampdist_per_s"] = row["sampdist_native_per_s"] or sodium  # the default path
        row["dec_per_s"] = per_second(lambda c=cts: s.dec(sk, c), n)
        row["raw_3_scalarmult_per_s"] = per_second(_raw_scalarmult_loop(n), n)
        rows[str(n)] = row
    return rows


def _us(rate: float | None) -> float | None:
    return None if not rate else 1e6 / rate


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
    print()
    print(f"secure SampDist, µs/row {'native':>10} {'libsodium':>10} {'raw 3 x smult':>14}")
    for n, r in secure.items():
        nat = _us(r["sampdist_native_per_s"])
        print(
            f"{'':15} {n:>6} {'—' if nat is None else f'{nat:.1f}':>10} "
            f"{_us(r['sampdist_libsodium_per_s']) or 0:>10.1f} "
            f"{_us(r['raw_3_scalarmult_per_s']) or 0:>14.1f}"
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
        "secure_backend": "native" if sec["sampdist_native_per_s"] else "libsodium",
        "secure_sampdist_native_per_s": sec["sampdist_native_per_s"],
        "secure_sampdist_libsodium_per_s": sec["sampdist_libsodium_per_s"],
        "secure_us_per_row": {
            "sampdist_native": _us(sec["sampdist_native_per_s"]),
            "sampdist_libsodium": _us(sec["sampdist_libsodium_per_s"]),
            "raw_3_scalarmult": _us(sec["raw_3_scalarmult_per_s"]),
        },
        # libsodium time per row / native time per row (None without the native build)
        "secure_native_speedup": (
            sec["sampdist_native_per_s"] / sec["sampdist_libsodium_per_s"]
            if sec["sampdist_native_per_s"]
            else None
        ),
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
