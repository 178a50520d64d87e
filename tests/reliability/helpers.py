"""Shared by tests/reliability and tests/security: real servers on 127.0.0.1, probes, RSS.

In-process servers come from ``server.conftest.running_server`` (port 0); a server in its
own process (for signals and RSS) from :func:`spawn_server`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# What a client may ever see from a request it got wrong (never UNKNOWN or INTERNAL);
# NOT_FOUND: a model name the server does not serve.
INPUT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
    }
)
# Text that would mean internals leaked to the client.
LEAK_MARKERS = ("Traceback", 'File "', "Exception", "numpy.", "onnxruntime")


def health_status(port: int, service: str = "", timeout: float = 5.0) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return int(resp.status)


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def spawn_server(
    release_dir: Path, port: int, health_port: int, *extra: str, metrics_port: int = 0
) -> subprocess.Popen[str]:
    """``encryip serve`` in a child process on 127.0.0.1 (stdout+stderr merged, text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [
            sys.executable, "-m", "encryip_runtime.cli.main", "serve", str(release_dir),
            "--host", "127.0.0.1", "--port", str(port), "--health-port", str(health_port),
            "--metrics-port", str(metrics_port), *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def wait_serving(health_port: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.communicate()[0]}")
        with contextlib.suppress(grpc.RpcError):
            if health_status(health_port, timeout=1.0) == SERVING:
                return
        if time.monotonic() > deadline:
            raise AssertionError("server did not become SERVING")
        time.sleep(0.05)


@contextlib.contextmanager
def server_process(
    release_dir: Path, port: int, health_port: int, *extra: str, metrics_port: int = 0
) -> Iterator[subprocess.Popen[str]]:
    """A serving child process; killed (not left behind) if the test fails."""
    proc = spawn_server(release_dir, port, health_port, *extra, metrics_port=metrics_port)
    try:
        wait_serving(health_port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
