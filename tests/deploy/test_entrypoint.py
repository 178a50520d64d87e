"""Run the runtime image's exact command line on this machine, configured like the pod.

The command is ENTRYPOINT + CMD of deploy/Dockerfile (``encryip serve /models/release``)
with the release path swapped for a public release directory made read-only (the pod
mounts it read-only), the environment from the rendered cpu overlay's ConfigMap (TLS
with a throwaway self-signed certificate, ports moved to free loopback ports), and the
same checks the kubelet and Prometheus make: every probed health service goes SERVING,
/metrics answers, the image's HEALTHCHECK passes, and SIGTERM drains and exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .helpers import (
    DEPLOY,
    kustomize,
    one,
    parse_dockerfile,
    runtime_config,
    runtime_container,
)

VENV_BIN = Path(sys.executable).parent
RELEASE_MOUNT = "/models/release"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_command(release: Path) -> list[str]:
    """ENTRYPOINT + CMD of the CPU runtime image, release path swapped, `encryip` from the venv."""
    final = parse_dockerfile(DEPLOY / "Dockerfile").final
    argv = final.exec_form("ENTRYPOINT") + final.exec_form("CMD")
    exe = VENV_BIN / argv[0]
    if not exe.exists():
        pytest.skip(f"{argv[0]} console script not installed in {VENV_BIN} (pip install -e .)")
    return [str(exe), *(str(release) if a == RELEASE_MOUNT else a for a in argv[1:])]


def health_status(port: int, service: str) -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return None
        return int(reply.status)


def self_signed(tmp: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, env: dict[str, str]) -> None:
        self.proc, self.log, self.env = proc, log, env

    @property
    def health_port(self) -> int:
        return int(self.env["ENCRYIP_HEALTH_PORT"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_serving(self, service: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited {self.proc.returncode}:\n{self.output()}")
            if health_status(self.health_port, service) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
        pytest.fail(f"health {service!r} not SERVING after {timeout} s:\n{self.output()}")


@pytest.fixture()
def pod_env(tmp_path: Path) -> dict[str, str]:
    """The container's environment: the cpu overlay's ConfigMap, adapted to loopback."""
    config = runtime_config(kustomize("overlays/cpu"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCRYIP_")}
    env.update(config)
    scratch = tmp_path / "tmp"  # the pod's emptyDir /tmp
    scratch.mkdir()
    env.update(
        HOME=str(scratch),
        TMPDIR=str(scratch),
        PYTHONDONTWRITEBYTECODE="1",
        ENCRYIP_HOST="127.0.0.1",
        ENCRYIP_HEALTH_PORT=str(free_port()),
        ENCRYIP_METRICS_PORT=str(free_port()),
        ENCRYIP_HTTP_PORT=str(free_port()),
        ENCRYIP_INTRA_OP_THREADS="1",  # resourceFieldRef limits.cpu in the pod
        ENCRYIP_DRAIN_SECONDS="2",
    )
    tls = self_signed(tmp_path)
    if tls is None:
        del env["ENCRYIP_TLS_CERT"], env["ENCRYIP_TLS_KEY"]
    else:
        env["ENCRYIP_TLS_CERT"], env["ENCRYIP_TLS_KEY"] = map(str, tls)
    return env


@pytest.fixture()
def read_only_release(secure_release: Any, tmp_path: Path) -> Iterator[Path]:
    release = secure_release.public_dir(tmp_path / "release")
    for f in release.iterdir():
        f.chmod(0o444)
    release.chmod(0o555)
    yield release
    release.chmod(0o755)


@pytest.fixture()
def server(read_only_release: Path, pod_env: dict[str, str], tmp_path: Path) -> Iterator[Running]:
    # --port 0: the main port is free-picked; the probes only need the health port.
    argv = [*image_command(read_only_release), "--port", "0"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=pod_env, cwd=pod_env["TMPDIR"], stdout=out, stderr=subprocess.STDOUT
        )
    running = Running(proc, log, pod_env)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_image_command_serves_health_and_metrics(server: Running) -> None:
    deployment = one(kustomize("overlays/cpu"), "Deployment", "encryip")
    probes = runtime_container(deployment)
    services = {
        probes[k]["grpc"].get("service", "")
        for k in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    server.wait_serving("")
    for service in sorted(services | {"inference.GRPCInferenceService"}):
        assert health_status(server.health_port, service) == health_pb2.HealthCheckResponse.SERVING

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    url = (
        f"http://127.0.0.1:{server.env['ENCRYIP_METRICS_PORT']}{annotations['prometheus.io/path']}"
    )
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert "# TYPE" in reply.read().decode()

    # The image's HEALTHCHECK (for `docker run`), run as written with the venv's python.
    check = json.loads(
        parse_dockerfile(DEPLOY / "Dockerfile").final.args("HEALTHCHECK")[0].split("CMD", 1)[1]
    )
    assert check[0] == "python"
    ok = subprocess.run([sys.executable, *check[1:]], env=server.env, timeout=30, check=False)
    assert ok.returncode == 0

    # SIGTERM (what the kubelet sends after preStop): drain, exit 0 within the grace.
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=float(server.env["ENCRYIP_DRAIN_SECONDS"]) + 15)
    assert code == 0, server.output()
    if "ENCRYIP_TLS_CERT" in server.env:
        assert "tls" in server.output().lower(), "the main port should have started with TLS"
    assert time.monotonic() - started < float(server.env["ENCRYIP_DRAIN_SECONDS"]) + 10
    assert health_status(server.health_port, "") is None, "health port closed after drain"


def test_image_command_refuses_a_release_with_secrets(
    secure_release: Any, pod_env: dict[str, str]
) -> None:
    """Why the init container copies exactly two files: the full release dir has keys."""
    assert list(secure_release.root.rglob("*.key")), "fixture release should hold keys"
    argv = [*image_command(secure_release.root), "--port", "0"]
    out = subprocess.run(
        argv, env=pod_env, cwd=pod_env["TMPDIR"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "key" in out.stderr.lower() or "vault" in out.stderr.lower(), out.stderr
    assert health_status(int(pod_env["ENCRYIP_HEALTH_PORT"]), "") is None
