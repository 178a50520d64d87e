"""Load and soak: sustained concurrency against a real ``encryip serve`` child process.

    python -m benchmarks.soak                      # concurrency 64 for 60 s, tiny secure release
    python -m benchmarks.soak --seconds 10 --concurrency 16 --max-queue 8
    python -m benchmarks.soak --release path/to/release/licensees/acme

Loopback only (127.0.0.1), bounded in time (``--seconds``) and in requests per worker, and
it stops by itself: the server gets SIGTERM at the end and must drain and exit 0.
Every request must end OK, or with ``RESOURCE_EXHAUSTED`` when the queue is full (the
deliberate refusal; the worker backs off and retries). Anything else is an error.

Reports (stderr log, then one JSON object as the last stdout line): requests, rows/s,
latency p50/p90/p99/max of OK requests, outcomes by status code, and the server's RSS
(``VmRSS`` of /proc/PID/status) sampled every second: after warm-up, at the end, the
growth between them and the slope of a line fitted through the samples after warm-up.
Exit status 1 if any error, or RSS growth over ``--max-rss-growth-mib``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SoakResult", "main", "run_soak"]

log = logging.getLogger("benchmarks.soak")

OK = "OK"
REFUSED = "RESOURCE_EXHAUSTED"
# Bound per worker, whatever the time budget (no loop runs unbounded).
MAX_REQUESTS_PER_WORKER = 1_000_000


@dataclass
class SoakResult:
    concurrency: int
    seconds: float
    rows_per_request: int
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rows_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mib_after_warmup: float = 0.0
    rss_mib_end: float = 0.0
    rss_growth_mib: float = 0.0
    rss_slope_mib_per_min: float = 0.0
    rss_samples_mib: list[float] = field(default_factory=list)
    server_exit_code: int | None = None
    server_log_tail: str = ""

    @property
    def error_count(self) -> int:
        return sum(n for code, n in self.outcomes.items() if code not in (OK, REFUSED))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_count"] = self.error_count
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _wait_serving(health_port: int, proc: subprocess.Popen[str], timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.communicate()[0][-2000:]}")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError("server did not become SERVING")


def tiny_release_dir(out: Path) -> Path:
    """A small real secure release (tests/tiny_release.py); returns its runtime directory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_release import make_tiny_release

    release = make_tiny_release(out / "release", "secure")
    return release.licensee_dir("acme")


def run_soak(
    release_dir: Path,
    *,
    concurrency: int = 64,
    seconds: float = 60.0,
    rows: int = 1,
    warmup_fraction: float = 0.2,
    server_args: tuple[str, ...] = (),
) -> SoakResult:
    """Start a server, load it for ``seconds``, SIGTERM it; everything measured."""
    import grpc

    from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc

    manifest_shape = _input_shape(release_dir)
    port, health_port = _free_port(), _free_port()
    cmd = [
        sys.executable, "-m", "encryip_runtime.cli.main", "serve", str(release_dir),
        "--host", "127.0.0.1", "--port", str(port), "--health-port", str(health_port),
        "--metrics-port", "0", "--http-port", "0", "--log-level", "WARNING", *server_args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    result = SoakResult(concurrency=concurrency, seconds=seconds, rows_per_request=rows)
    try:
        _wait_serving(health_port, proc, 60)
        x = np.random.default_rng(0).integers(0, 256, (rows, *manifest_shape), dtype=np.uint8)
        request = encryip_pb2.PredictRequest(
            input=encryip_pb2.Tensor(dtype="uint8", shape=list(x.shape), data=x.tobytes())
        )
        lock = threading.Lock()
        outcomes: Counter[str] = Counter()
        latencies: list[float] = []
        errors: list[str] = []
        start = time.monotonic()
        end = start + seconds
        done = threading.Event()

        def worker() -> None:
            local: list[float] = []
            counts: Counter[str] = Counter()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = encryip_pb2_grpc.EncryIPStub(channel)
                for _ in range(MAX_REQUESTS_PER_WORKER):
                    if time.monotonic() >= end:
                        break
                    t0 = time.perf_counter()
                    try:
                        resp = stub.Predict(request, timeout=30)
                        if len(resp.ciphertexts) != rows:
                            raise RuntimeError(f"{len(resp.ciphertexts)} ciphertexts for {rows}")
                        local.append(time.perf_counter() - t0)
                        counts[OK] += 1
                    except grpc.RpcError as exc:
                        code = exc.code().name  # type: ignore[attr-defined]
                        counts[code] += 1
                        if code == REFUSED:
                            done.wait(0.002)  # the deliberate refusal: back off, retry
                        else:
                            with lock:
                                errors.append(f"{code}: {exc.details()}")  # type: ignore[attr-defined]
                    except Exception as exc:
                        counts["CLIENT_" + type(exc).__name__] += 1
                        with lock:
                            errors.append(repr(exc))
            with lock:
                latencies.extend(local)
                outcomes.update(counts)

        def sample_rss(samples: list[tuple[float, float]]) -> None:
            while not done.wait(1.0):
                try:
                    samples.append((time.monotonic() - start, _rss_mib(proc.pid)))
                except (OSError, RuntimeError):
                    return

        samples: list[tuple[float, float]] = []
        sampler = threading.Thread(target=sample_rss, args=(samples,), daemon=True)
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        sampler.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        elapsed = time.monotonic() - start
        rss_end = _rss_mib(proc.pid)
        done.set()
        sampler.join(5)
        warm = [(t, r) for t, r in samples if t >= warmup_fraction * seconds] or samples[-1:]
        result.requests = sum(outcomes.values())
        result.outcomes = dict(outcomes)
        result.errors = errors[:20]
        result.rows_per_s = outcomes[OK] * rows / elapsed
        result.latency_ms = _percentiles(latencies)
        result.rss_samples_mib = [round(r, 1) for _, r in samples]
        result.rss_mib_after_warmup = warm[0][1] if warm else rss_end
        result.rss_mib_end = rss_end
        result.rss_growth_mib = rss_end - result.rss_mib_after_warmup
        if len(warm) >= 3:
            ts, rs = np.array([t for t, _ in warm]), np.array([r for _, r in warm])
            result.rss_slope_mib_per_min = float(np.polyfit(ts, rs, 1)[0] * 60)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        result.server_exit_code = proc.returncode
        result.server_log_tail = out[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    return result


def _input_shape(release_dir: Path) -> tuple[int, ...]:
    from encryip_runtime.formats.manifest import Manifest

    return tuple(Manifest.load(release_dir / "manifest.json").input.shape)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ms = np.array(latencies) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p90": round(float(np.percentile(ms, 90)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "max": round(float(ms.max()), 3),
        "mean": round(float(ms.mean()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--release", type=Path, help="runtime directory (default: a tiny secure release)"
    )
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rows", type=int, default=1, help="rows per request")
    p.add_argument("--max-queue", type=int, default=None, help="server --max-queue")
    p.add_argument("--max-batch", type=int, default=None, help="server --max-batch")
    p.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.seconds <= 0 or args.rows < 1:
        p.error("--concurrency, --seconds and --rows must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server_args: list[str] = []
    if args.max_queue is not None:
        server_args += ["--max-queue", str(args.max_queue)]
    if args.max_batch is not None:
        server_args += ["--max-batch", str(args.max_batch)]
    with tempfile.TemporaryDirectory(prefix="encryip-soak-") as tmp:
        release = args.release or tiny_release_dir(Path(tmp))
        log.info(
            "soak: concurrency %d for %.0f s against %s", args.concurrency, args.seconds, release
        )
        r = run_soak(
            release,
            concurrency=args.concurrency,
            seconds=args.seconds,
            rows=args.rows,
            server_args=tuple(server_args),
        )
    log.info(
        "%d requests, %.0f rows/s, outcomes %s, latency %s, "
        "RSS %.1f -> %.1f MiB (%+.1f, %+.2f MiB/min)",
        r.requests, r.rows_per_s, r.outcomes, r.latency_ms, r.rss_mib_after_warmup,
        r.rss_mib_end, r.rss_growth_mib, r.rss_slope_mib_per_min,
    )  # fmt: skip
    from benchmarks.common import emit

    emit({"benchmark": "soak", **r.to_json()})
    ok = r.error_count == 0 and r.server_exit_code == 0
    ok = ok and r.rss_growth_mib <= args.max_rss_growth_mib
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
