"""The serving benchmark's h2load load generator against a real server on loopback.

h2load cannot read gRPC trailers, so the benchmark counts a response as good only by
its DATA bytes. These tests check that accounting both ways: good calls count, refused
calls (trailers only, no DATA) are errors and never throughput."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from server.conftest import running_server, sample_inputs

from benchmarks.serving import PREDICT, H2Load, call_once
from encryip_runtime._generated.encryip.v1 import encryip_pb2

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None, reason="h2load not installed (scripts/bootstrap.sh)"
)


def _request(dtype: str = "uint8") -> bytes:
    x = sample_inputs(2)
    tensor = encryip_pb2.Tensor(dtype=dtype, shape=list(x.shape), data=x.tobytes())
    return encryip_pb2.PredictRequest(input=tensor).SerializeToString()


def test_good_calls_count_refused_calls_are_errors(secure_release: Any, tmp_path: Path) -> None:
    with running_server(secure_release.licensee_dir("acme")) as server:
        address = f"127.0.0.1:{server.port}"
        good, bad = _request(), _request(dtype="float32")  # 128 bytes are not 128 floats
        gen = H2Load(2, tmp_path)
        size = len(call_once(address, PREDICT, good))
        gen.expect[(address, PREDICT, good)] = size
        gen.expect[(address, PREDICT, bad)] = size

        ok = gen.run(address, PREDICT, good, concurrency=4, warmup=0.2, dur=0.6)
        assert ok["requests"] > 0 and ok["errors"] == 0, ok
        assert ok["requests_per_s"] > 0 and 0 < ok["p50_ms"] <= ok["p99_ms"], ok

        refused = gen.run(address, PREDICT, bad, concurrency=4, warmup=0.2, dur=0.6)
        assert refused["requests"] == 0 and refused["errors"] > 0, refused
        assert refused["requests_per_s"] == 0, refused
