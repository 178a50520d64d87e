"""benchmarks.crypto's AVX2-vs-portable comparison, on a few rows (the full run is long)."""

from __future__ import annotations

import pytest

from benchmarks.crypto import bench_simd
from encryip_runtime.crypto import r255_native


def test_simd_comparison_reports_both_paths_and_restores_the_switch() -> None:
    if not r255_native.available() or r255_native.simd() != "avx2":
        assert bench_simd([4], pairs=2) is None
        pytest.skip("no AVX2 path here: the comparison is None, as checked")
    got = bench_simd([4, 8], pairs=2)
    assert got is not None and set(got) == {"4", "8"}
    for cell in got.values():
        assert cell["avx2_cpu_us"] > 0 and cell["portable_cpu_us"] > 0
        assert cell["speedup"] > 0
    assert r255_native.simd() == "avx2"  # put back after the portable runs
