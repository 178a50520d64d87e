"""Smoke test of ``benchmarks/serving.py`` at a tiny budget (< 30 s): it runs end to end on
loopback, stops by itself and prints its JSON last line. The numbers mean nothing here.

KServe runs only if ``bench-out/kserve-venv`` was already built by a real run (building it
takes minutes); otherwise its rows are skipped and the JSON says ``"kserve": false``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("load_generator", ["python", "h2load"])
def test_serving_benchmark_tiny(tmp_path: Path, load_generator: str) -> None:
    pytest.importorskip("torch")  # the benchmark builds its models with the exporter
    if load_generator == "h2load" and shutil.which("h2load") is None:
        pytest.skip("h2load not installed (scripts/bootstrap.sh installs nghttp2-client)")
    out = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.serving", "--tiny", "--kserve", "existing",
            "--load-generator", load_generator, "--out", str(tmp_path / "serving"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    result = json.loads(lines[-1])
    assert result["benchmark"] == "serving" and result["scale"] == "tiny"
    assert result["load_generator"] == load_generator
    cnn = result["models"]["cnn"]
    for key in (
        "protected_vs_plain_throughput",
        "protected_vs_kserve_throughput",
        "echo_vs_kserve_throughput",
        "protected_f1_vs_plain_throughput_c32_b32",
        "format1_crypto_us_per_row",
        "targets_met",
        "p99_ms",
    ):
        assert key in cnn
    assert cnn["crypto_us_per_row"] > 0 and cnn["raw_3_scalarmult_us_per_row"] > 0
    systems = {c["system"] for c in result["cells"]["cnn"]}
    want = {"protected", "protected-f1", "plain", "protected-v2", "echo"}
    want |= {"kserve"} if result["kserve"] else set()
    if load_generator == "h2load":  # REST cells (h2load --h1), beside KServe's REST
        want |= {"protected-rest"} | ({"kserve-rest"} if result["kserve"] else set())
    assert systems == want
    assert all(cell["errors"] == 0 for cell in result["cells"]["cnn"])
    # rows/s for every cell, keyed like p99_ms
    keys = {f"{c['system']}_c{c['concurrency']}_b{c['batch']}" for c in result["cells"]["cnn"]}
    assert set(cnn["rows_per_s"]) == keys and set(cnn["p99_ms"]) <= keys
    if sys.platform == "linux":  # server CPU per request comes from /proc
        costs = [c["server_cpu_us_per_request"] for c in result["cells"]["cnn"] if c["requests"]]
        assert costs and all(v > 0 for v in costs), result["cells"]["cnn"]
        # our servers' CPU per row, split by stage: protection only where it protects
        splits = {
            c["system"]: c["server_cpu_us_per_row"]
            for c in result["cells"]["cnn"]
            if c.get("server_cpu_us_per_row") and c["system"] in ("protected", "plain")
        }
        assert set(splits) == {"protected", "plain"}, result["cells"]["cnn"]
        assert splits["protected"]["protection"] > 5 * splits["plain"]["protection"] > 0
        assert all(s["inference"] > 0 for s in splits.values())
    for system in systems:  # 0.3 s cells on a busy machine: some may see no completion
        assert sum(c["requests"] for c in result["cells"]["cnn"] if c["system"] == system) > 0
    # Every server it started has stopped (each wrote its log, none is still listening).
    assert (tmp_path / "serving" / "logs-cnn" / "protected.log").is_file()


def test_plain_mode_is_not_a_server_flag() -> None:
    """Protection off exists only inside the benchmark, never as an `encryip serve` setting."""
    from benchmarks.serving import PLAIN_FLAG
    from encryip_runtime.server.config import ServerConfig

    names = {f.lower() for f in ServerConfig.__dataclass_fields__}
    assert not any("plain" in n or "unprotect" in n or "benchmark" in n for n in names)
    help_text = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", "serve", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    assert "--reroll-pool" in help_text and PLAIN_FLAG not in help_text
