"""A short soak (benchmarks/soak.py at a few seconds): a real ``encryip serve`` child process
under concurrency, zero errors but the deliberate RESOURCE_EXHAUSTED, p99 reported, RSS
flat, clean drain at the end. The 60 s / concurrency 64 run is ``python -m benchmarks.soak``.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.soak import OK, REFUSED, run_soak


@pytest.mark.parametrize(
    ("concurrency", "seconds", "server_args"),
    [
        (32, 6.0, ()),
        # A queue smaller than the number of clients: some requests are refused on purpose.
        (48, 4.0, ("--max-queue", "4", "--max-batch", "2")),
    ],
    ids=["steady", "queue-full"],
)
def test_short_soak(
    secure_release: Any, concurrency: int, seconds: float, server_args: tuple[str, ...]
) -> None:
    r = run_soak(
        secure_release.licensee_dir("acme"),
        concurrency=concurrency,
        seconds=seconds,
        server_args=server_args,
    )
    print(  # reported with -s / in the junit output
        f"soak c={concurrency} {seconds:.0f}s: {r.requests} requests, {r.rows_per_s:.0f} rows/s, "
        f"outcomes {r.outcomes}, latency ms {r.latency_ms}, RSS {r.rss_mib_after_warmup:.1f} -> "
        f"{r.rss_mib_end:.1f} MiB ({r.rss_growth_mib:+.1f})"
    )
    assert r.error_count == 0, (r.outcomes, r.errors)
    assert set(r.outcomes) <= {OK, REFUSED}
    assert r.outcomes.get(OK, 0) > 20 * seconds
    if server_args:
        assert r.outcomes.get(REFUSED, 0) > 0, "the small queue never filled"
    assert r.latency_ms["p99"] < 5_000
    # Flat memory: a few MiB of allocator noise at most, not a leak per request.
    assert r.rss_growth_mib < 24, r.rss_samples_mib
    assert r.server_exit_code == 0, r.server_log_tail
    assert "Traceback" not in r.server_log_tail
