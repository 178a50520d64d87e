"""Crypto throughput: SampDist and Dec per profile, next to the raw primitive's cost.

Run standalone (not part of the test suite)::

    .venv/bin/python -m benchmarks.crypto          # or: python benchmarks/crypto.py

The raw primitive is measured in the same run so the ratio is meaningful on any machine:

* paper: a bare numpy gather of ``(N, 3)`` int64 through a table (the least any
  SampDist on Z_p^* log tables can cost);
* secure: three ``crypto_scalarmult_ristretto255`` calls per row through
  pysodium's raw ctypes handle in a tight loop.

Secure SampDist, one core, at batch 1, 32 and 1024, in the same run:

* ``codebook``: what the server runs (``CSLite.sampdist_codebook``: the native C with
  the codebook's halves, no decode or square root per row, one field inversion per 64
  outputs). ``secure_sampdist_per_s`` is this path at batch 1024 on one thread;
* ``native``: SampDist of arbitrary ciphertexts (``CSLite.sampdist``, one decode and
  one encode per component);
* ``libsodium``: the fallback (a scheme built with ``ENCRYIP_NATIVE=0``).

Each is timed twice: wall clock (rows/s) and the calling thread's CPU time (µs/row, the
cost on one core, which other processes on a shared machine disturb far less).

Threads: one 4096-row batch split across 1, 2, … up to the core count by the server's
``CryptoPool`` (wall clock, best of the repeats): rows/s and efficiency, and the
crossover where splitting a batch across two threads starts to pay.

``--release DIR``: also the release's own ``ProtectedModel.protect`` (the server's lines
2-4 of Algorithm 2, whatever its format and component count) on random logits, batch
split by a ``CryptoPool`` of 1, 2, … threads, and that model's plain onnxruntime rows/s
on the same machine: where inference runs on a GPU, ``protect`` on the CPU cores is the
protected throughput's ceiling (``protect_threads`` in the JSON).

Prints tables, then one JSON object as the last line.
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

from encryip_runtime.crypto import make_scheme, r255_native

__all__ = ["main"]


def _seconds_per_call(fn: Callable[[], Any], clock: Callable[[], float], min_time: float) -> float:
    """``clock`` seconds per call of ``fn``: the median of 5 loops, each lasting at least
    ``min_time / 5`` (after one warm-up call: tables, caches, lazy imports)."""
    fn()
    loops = 1
    while True:
        t0 = clock()
        for _ in range(loops):
            fn()
        dt = clock() - t0
        if dt >= min_time / 5 or loops >= 1 << 20:
            break
        loops *= 2
    times = []
    for _ in range(5):
        t0 = clock()
        for _ in range(loops):
            fn()
        times.append((clock() - t0) / loops)
    return statistics.median(times)


def per_second(fn: Callable[[], Any], items: int, *, min_time: float = 0.3) -> float:
    """Items per second (wall clock): the median over repeats of a timed loop."""
    return items / _seconds_per_call(fn, time.perf_counter, min_time)


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


def _raw_scalarmult_rows(n: int) -> Callable[[int, int], Any]:
    """``run(a, b)``: rows ``a..b`` of ``3n`` raw scalar multiplications (ctypes releases
    the GIL for each call), for splitting across threads like the server's pool."""
    loops: dict[tuple[int, int], Callable[[], None]] = {}

    def run(a: int, b: int) -> Any:
        if (a, b) not in loops:
            loops[(a, b)] = _raw_scalarmult_loop(b - a)
        loops[(a, b)]()
        return np.empty((b - a, 3, 32), dtype=np.uint8)

    return run


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


def cpu_us_per_item(fn: Callable[[], Any], items: int, *, min_time: float = 0.2) -> float:
    """µs of the calling thread's CPU time per item: the median over 5 repeats."""
    return _seconds_per_call(fn, time.thread_time, min_time) / items * 1e6


def best_per_second(fn: Callable[[], Any], items: int, *, repeats: int = 7) -> float:
    """Items per second of the best repeat (wall clock): the least disturbed run."""
    fn()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, items / (time.perf_counter() - t0))
    return best


def _schemes() -> tuple[Any, Any]:
    """The secure scheme on the default backend and on libsodium (``ENCRYIP_NATIVE=0``)."""
    default = make_scheme("secure", 10)
    old = os.environ.get(r255_native.ENV_VAR)
    os.environ[r255_native.ENV_VAR] = "0"
    try:
        sodium = make_scheme("secure", 10)
    finally:
        if old is None:
            del os.environ[r255_native.ENV_VAR]
        else:
            os.environ[r255_native.ENV_VAR] = old
    return default, sodium


def bench_secure(batches: list[int]) -> dict[str, Any]:
    s, sodium = _schemes()
    native = s.group.backend == "native"
    fam = s.gen(3)
    sk = fam.keys[1]
    codebook = s.enc(fam.pk, s.group.random_elements(10))
    prepared = s.prepare_codebook(codebook)
    rows: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for n in batches:
        slots = rng.integers(0, len(codebook), size=n)
        cts = codebook[slots]
        paths: dict[str, Callable[[], Any]] = {
            "codebook": lambda sl=slots: s.sampdist_codebook(fam.pk, prepared, sl),
            "libsodium": lambda c=cts: sodium.sampdist(fam.pk, c),
        }
        if native:
            paths["native"] = lambda c=cts: s.sampdist(fam.pk, c)
        raw = _raw_scalarmult_loop(n)
        row: dict[str, Any] = {}
        for name, fn in paths.items():
            row[f"sampdist_{name}_per_s"] = per_second(fn, n)
            row[f"sampdist_{name}_cpu_us"] = cpu_us_per_item(fn, n)
        row.setdefault("sampdist_native_per_s", None)
        row.setdefault("sampdist_native_cpu_us", None)
        row["sampdist_per_s"] = row["sampdist_codebook_per_s"]  # the server's path
        row["dec_per_s"] = per_second(lambda c=cts: s.dec(sk, c), n)
        row["raw_3_scalarmult_per_s"] = per_second(raw, n)
        row["raw_3_scalarmult_cpu_us"] = cpu_us_per_item(raw, n)
        rows[str(n)] = row
    return rows


def bench_simd(batches: list[int], pairs: int = 5) -> dict[str, Any] | None:
    """The codebook path on the AVX2 lanes against the portable C, side by side: ``pairs``
    adjacent (AVX2, portable) measurements per batch size, order alternating; µs of one
    thread's CPU per row (medians) and the median of the per-pair ratios. None where the
    native backend has no AVX2 path here."""
    s = make_scheme("secure", 10)
    if s.group.backend != "native" or r255_native.simd() != "avx2":
        return None
    fam = s.gen(3)
    prepared = s.prepare_codebook(s.enc(fam.pk, s.group.random_elements(10)))
    rng = np.random.default_rng(2)
    out: dict[str, Any] = {}
    try:
        for n in batches:
            slots = rng.integers(0, 10, size=n)
            times: dict[bool, list[float]] = {True: [], False: []}
            for i in range(pairs):
                for enable in (True, False) if i % 2 == 0 else (False, True):
                    r255_native.simd(enable)
                    times[enable].append(
                        cpu_us_per_item(
                            lambda sl=slots: s.sampdist_codebook(fam.pk, prepared, sl), n
                        )
                    )
            out[str(n)] = {
                "avx2_cpu_us": statistics.median(times[True]),
                "portable_cpu_us": statistics.median(times[False]),
                "speedup": statistics.median(
                    p / a for a, p in zip(times[True], times[False], strict=True)
                ),
            }
    finally:
        r255_native.simd(True)
    return out


def bench_threads(max_threads: int, rows: int = 4096) -> dict[str, Any]:
    """One ``rows``-row batch split across 1..max_threads threads (the server's pool)."""
    from encryip_runtime.pipeline import CryptoPool

    s = make_scheme("secure", 10)
    fam = s.gen(1)
    codebook = s.enc(fam.pk, s.group.random_elements(10))
    prepared = s.prepare_codebook(codebook)
    slots = np.random.default_rng(1).integers(0, len(codebook), size=rows)

    def run(a: int, b: int) -> Any:
        return s.sampdist_codebook(fam.pk, prepared, slots[a:b])

    # The machine's own ceiling for this kind of code (field multiplications): libsodium's
    # scalar multiplication split the same way. Where another process holds a core (a
    # shared or busy machine), neither scales, whatever the code does.
    raw_rows = max(2 * max_threads, rows // 16)
    raw_loop = _raw_scalarmult_rows(raw_rows)

    rates: dict[str, float] = {}
    raw_rates: dict[str, float] = {}
    for t in range(1, max_threads + 1):
        pool = CryptoPool(t)
        try:
            rates[str(t)] = best_per_second(lambda p=pool: p.split(rows, run), rows, repeats=5)
            raw_rates[str(t)] = best_per_second(
                lambda p=pool: p.split(raw_rows, raw_loop, min_rows=1), raw_rows, repeats=3
            )
        finally:
            pool.close()
    one = rates["1"]
    scaling = {t: r / one for t, r in rates.items()}
    efficiency = {t: r / (one * int(t)) for t, r in rates.items()}
    raw_scaling = {t: r / raw_rates["1"] for t, r in raw_rates.items()}
    # Crossover: the smallest batch that two threads (any split allowed) serve faster.
    cross: dict[str, dict[str, float]] = {}
    crossover = None
    if max_threads >= 2:
        one_pool, two_pool = CryptoPool(1), CryptoPool(2)
        try:
            for n in (2, 4, 8, 16, 32, 64, 128):
                sl = slots[:n]

                def part(a: int, b: int, sl: Any = sl) -> Any:
                    return s.sampdist_codebook(fam.pk, prepared, sl[a:b])

                r1 = best_per_second(lambda n=n: one_pool.split(n, part), n, repeats=15)
                r2 = best_per_second(lambda n=n: two_pool.split(n, part, min_rows=1), n, repeats=15)
                cross[str(n)] = {"one_thread_per_s": r1, "two_threads_per_s": r2}
                if crossover is None and r2 > r1:
                    crossover = n
        finally:
            one_pool.close()
            two_pool.close()
    return {
        "rows": rows,
        "rows_per_s": rates,
        "scaling": scaling,
        "efficiency": efficiency,
        "raw_scalarmult_scaling": raw_scaling,
        "split_vs_one_thread": cross,
        "crossover_rows": crossover,
    }


def bench_protect(release: str, max_threads: int, rows: int = 4096) -> dict[str, Any]:
    """A release's ``protect`` (Φ⁻¹, SampDist, wire encoding) at ``rows`` rows split over
    1..max_threads threads, and its model's plain onnxruntime rows/s (default threads)."""
    from encryip_runtime.pipeline import ProtectedModel

    rng = np.random.default_rng(2)
    m = ProtectedModel.load(release, crypto_threads=1)
    try:
        logits = rng.standard_normal((rows, m.manifest.output_size)).astype(np.float32)
        spec = m.manifest.input
        x = rng.integers(0, 256, size=(256, *spec.shape))
        x = m.validate_input(x.astype(np.uint8 if spec.dtype == "uint8" else np.float32))
        info = {
            "release": release,
            "ciphertext_bytes": m.ciphertext_size,
            "components": m.ciphertext_size // 32,
            "backend": m.crypto_backend,
            "protect_cpu_us_per_row_b32": cpu_us_per_item(lambda: m.protect(logits[:32]), 32),
            "plain_inference_rows_per_s_b256": best_per_second(
                lambda: m.logits(x), len(x), repeats=5
            ),
        }
    finally:
        m.close()
    rates: dict[str, float] = {}
    for t in range(1, max_threads + 1):
        mt = ProtectedModel.load(release, crypto_threads=t)
        try:
            rates[str(t)] = best_per_second(lambda mt=mt: mt.protect(logits), rows, repeats=5)
        finally:
            mt.close()
    return {
        **info,
        "rows": rows,
        "rows_per_s": rates,
        "scaling": {t: r / rates["1"] for t, r in rates.items()},
    }


def _us(rate: float | None) -> float | None:
    return None if not rate else 1e6 / rate


def _fmt(rate: float) -> str:
    return f"{rate / 1e6:9.2f} M/s" if rate >= 1e6 else f"{rate / 1e3:9.2f} k/s"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    release = None
    if "--release" in argv:
        i = argv.index("--release") + 1
        if i >= len(argv) or not os.path.isdir(argv[i]):
            sys.exit(
                "--release needs a release directory (a licensee's: model.onnx, manifest.json)"
            )
        release = argv[i]
    paper = bench_paper([1, 1024] if quick else [1, 1024, 1_000_000])
    secure = bench_secure([1, 32, 1024])
    simd = bench_simd([32, 1024])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = bench_threads(max(1, cores or 1), rows=1024 if quick else 4096)
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
    print("secure SampDist, µs/row of one thread's CPU time (wall clock in brackets)")
    print(f"{'batch':>6} {'codebook':>16} {'native':>16} {'libsodium':>16} {'raw 3 x smult':>16}")

    def cell(r: dict[str, Any], name: str) -> str:
        cpu, rate = r.get(f"{name}_cpu_us"), r.get(f"{name}_per_s")
        return "—" if cpu is None else f"{cpu:.1f} ({_us(rate) or 0:.1f})"

    for n, r in secure.items():
        print(
            f"{n:>6} {cell(r, 'sampdist_codebook'):>16} {cell(r, 'sampdist_native'):>16} "
            f"{cell(r, 'sampdist_libsodium'):>16} {cell(r, 'raw_3_scalarmult'):>16}"
        )
    if simd is not None:
        print("codebook path, AVX2 lanes vs portable C (µs/row of CPU, same run, alternating):")
        for n, c in simd.items():
            print(
                f"{n:>6} {c['avx2_cpu_us']:>8.1f} vs {c['portable_cpu_us']:>6.1f}"
                f"   {c['speedup']:.2f}x"
            )
    print()
    print(f"threads (one {threads['rows']}-row batch split): rows/s, scaling, efficiency")
    for t, rate in threads["rows_per_s"].items():
        print(
            f"{t:>6} {rate:>12,.0f} {threads['scaling'][t]:>8.2f}x {threads['efficiency'][t]:>8.0%}"
            f"   (raw scalarmult on this machine: {threads['raw_scalarmult_scaling'][t]:.2f}x)"
        )
    if threads["split_vs_one_thread"]:
        print("batch split over 2 threads vs one thread (rows/s):")
        for n, c in threads["split_vs_one_thread"].items():
            print(f"{n:>6} {c['one_thread_per_s']:>12,.0f} {c['two_threads_per_s']:>12,.0f}")
        print(f"crossover: {threads['crossover_rows']} rows")
    protect = None
    if release is not None:
        protect = bench_protect(release, max(1, cores or 1), rows=1024 if quick else 4096)
        print(
            f"\n{release}: protect ({protect['components']} components, {protect['backend']}), "
            f"{protect['rows']}-row batch; plain onnxruntime "
            f"{protect['plain_inference_rows_per_s_b256']:,.0f} rows/s at batch 256"
        )
        for t, rate in protect["rows_per_s"].items():
            print(f"{t:>6} {rate:>12,.0f} {protect['scaling'][t]:>8.2f}x")
    big = paper["1000000"] if "1000000" in paper else paper["1024"]
    sec = secure["1024"]
    # time per row of our batch SampDist / time per row of the raw primitive (CPU time)
    ratio = sec["sampdist_codebook_cpu_us"] / sec["raw_3_scalarmult_cpu_us"]
    components = 3
    result = {
        "benchmark": "crypto",
        "paper_sampdist_per_s": big["sampdist_per_s"],
        "paper_dec_per_s": big["dec_per_s"],
        "paper_batch": 1_000_000 if "1000000" in paper else 1024,
        "secure_sampdist_per_s": sec["sampdist_per_s"],
        "secure_components": components,
        "secure_dec_per_s": sec["dec_per_s"],
        "secure_raw_3_scalarmult_per_s": sec["raw_3_scalarmult_per_s"],
        "secure_overhead_ratio": ratio,
        "secure_backend": "native" if sec["sampdist_native_per_s"] else "libsodium",
        "secure_sampdist_native_per_s": sec["sampdist_native_per_s"],
        "secure_sampdist_libsodium_per_s": sec["sampdist_libsodium_per_s"],
        # µs of one thread's CPU time per row, by batch size and path
        "secure_cpu_us_per_row": {
            n: {
                "codebook": r["sampdist_codebook_cpu_us"],
                "native": r["sampdist_native_cpu_us"],
                "libsodium": r["sampdist_libsodium_cpu_us"],
                "raw_3_scalarmult": r["raw_3_scalarmult_cpu_us"],
            }
            for n, r in secure.items()
        },
        "secure_cpu_us_per_component": sec["sampdist_codebook_cpu_us"] / components,
        # which vector code the native rows ran on, and the AVX2 lanes against the portable
        # C measured side by side (None without an AVX2 path)
        "secure_simd": r255_native.simd() if r255_native.available() else None,
        "secure_simd_vs_portable": simd,
        "secure_us_per_row": {
            "sampdist": _us(sec["sampdist_per_s"]),
            "sampdist_native": _us(sec["sampdist_native_per_s"]),
            "sampdist_libsodium": _us(sec["sampdist_libsodium_per_s"]),
            "raw_3_scalarmult": _us(sec["raw_3_scalarmult_per_s"]),
        },
        # libsodium time per row / default time per row
        "secure_native_speedup": sec["sampdist_per_s"] / sec["sampdist_libsodium_per_s"],
        "secure_thread_scaling": threads["scaling"],
        # the same split of libsodium's scalar multiplication: what this machine allows
        "raw_thread_scaling": threads["raw_scalarmult_scaling"],
        "secure_threads": threads,
        "protect_threads": protect,
        "targets": {
            "paper_sampdist_per_s": 10_000_000,
            "secure_overhead_ratio_max": 1.3,
            "secure_cpu_us_per_row_b1024_max": 38.0,
            "secure_cpu_us_per_row_b32_max": 45.0,
            "secure_two_thread_scaling_min": 1.8,
        },
        "targets_met": {
            "paper": big["sampdist_per_s"] >= 10_000_000,
            "secure": ratio <= 1.3,
            "secure_b1024": sec["sampdist_codebook_cpu_us"] <= 38.0,
            "secure_b32": secure["32"]["sampdist_codebook_cpu_us"] <= 45.0,
            "secure_two_threads": threads["scaling"].get("2", 0.0) >= 1.8,
        },
        "detail": {"paper": paper, "secure": secure},
        "env": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "usable_cores": cores,
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
