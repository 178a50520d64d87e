"""Health transitions, drain on SIGTERM, reload under load, corrupt reloads, secret refusal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from encryip_runtime.client import EncryIPClient, RemoteError, decrypt_batch
from encryip_runtime.exceptions import SecretMaterialError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.server.app import create_server
from encryip_runtime.server.health import HEALTH_SERVICE_NAMES

from .conftest import (
    free_port,
    gate_current_model,
    make_config,
    running_server,
    runtime_copy,
    sample_inputs,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_health_transitions_and_drain(secure_release: Any) -> None:
    hport = free_port()
    cfg = make_config(secure_release.licensee_dir("acme"), health_port=hport, drain_seconds=10)
    server, port = create_server(cfg)
    # Loaded and bound, not started: the probe port answers NOT_SERVING.
    for name in HEALTH_SERVICE_NAMES:
        assert health_status(hport, name) == NOT_SERVING
    server.start()
    for name in HEALTH_SERVICE_NAMES:
        assert health_status(hport, name) == SERVING
        assert health_status(port, name) == SERVING  # the main port registers health too
    # Hold one request inside the model, then stop: health flips first, the request finishes.
    slow = gate_current_model(server)
    result: dict[str, Any] = {}

    def call() -> None:
        with EncryIPClient(f"127.0.0.1:{port}") as client:
            result["pred"] = client.predict(sample_inputs(2))

    caller = threading.Thread(target=call)
    caller.start()
    assert slow.entered.wait(10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    deadline = time.monotonic() + 5
    while health_status(hport) != NOT_SERVING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with EncryIPClient(f"127.0.0.1:{port}", timeout=2) as late, pytest.raises(RemoteError):
        late.predict(sample_inputs(1))  # new requests are refused while draining
    slow.gate.set()
    caller.join(10)
    stopper.join(10)
    assert len(result["pred"]) == 2
    assert server.wait(0)


def test_watch_stream_does_not_hold_the_drain(secure_release: Any) -> None:
    """A health Watch on the main port ends when the drain starts: stop() with nothing in
    flight takes about a second, not the whole --drain-seconds (it took 8.2 s of 8)."""
    cfg = make_config(secure_release.licensee_dir("acme"), drain_seconds=8.0)
    server, port = create_server(cfg)
    server.start()
    seen: list[int] = []
    ended = threading.Event()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )

        def watch() -> None:
            try:
                for update in stream:
                    seen.append(int(update.status))
            except grpc.RpcError:
                pass
            ended.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        deadline = time.monotonic() + 5
        while not seen:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        server.stop()
        took = time.monotonic() - t0
        assert ended.wait(5)
        watcher.join(5)
    assert took < 3.0, f"stop() took {took:.1f} s with a Watch open (drain_seconds=8)"
    assert seen[0] == SERVING and seen[-1] == NOT_SERVING  # the watcher saw the flip


def test_refuses_secret_material(secure_release: Any, tmp_path: Path) -> None:
    for secret in ("acme.key", "vault.json", "keys/acme.key"):
        d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / secret.replace("/", "_"))
        (d / secret).parent.mkdir(exist_ok=True)
        shutil.copy(secure_release.key("acme"), d / secret)
        with pytest.raises(SecretMaterialError, match="refusing to serve"):
            create_server(make_config(d))
    proc = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", "serve", str(secure_release.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to serve" in proc.stderr and "Traceback" not in proc.stderr


def _load_loop(port: int, stop: threading.Event, errors: list[str], count: list[int]) -> None:
    with EncryIPClient(f"127.0.0.1:{port}", timeout=10) as client:
        while not stop.is_set():
            try:
                client.predict(sample_inputs(2))
                count[0] += 1
            except Exception as exc:
                errors.append(repr(exc))


def test_reload_under_load_and_corrupt_reload(secure_release: Any, tmp_path: Path) -> None:
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    other = secure_release.licensee_dir("globex")  # same pk, different permutation
    key = LicenseeKey.load(secure_release.key("acme"))
    with running_server(d, metrics_port=free_port()) as server:
        stop, errors, count = threading.Event(), [], [0]
        workers = [
            threading.Thread(target=_load_loop, args=(server.port, stop, errors, count))
            for _ in range(4)
        ]
        for w in workers:
            w.start()
        digests = set()
        for i in range(4):
            src = other if i % 2 == 0 else secure_release.licensee_dir("acme")
            runtime_copy(src, d)
            assert server.reload()
            digests.add(server.store.current.digest)  # type: ignore[union-attr]
            time.sleep(0.1)
        # A corrupt model: the reload fails, is counted, and the old model keeps serving.
        good = server.store.current
        (d / "model.onnx").write_bytes(b"not an onnx model")
        assert not server.reload()
        assert server.store.current is good
        manifest_text = (d / "manifest.json").read_text()
        (d / "manifest.json").write_text(manifest_text[:100])
        assert not server.reload()
        time.sleep(0.2)
        stop.set()
        for w in workers:
            w.join(20)
        assert not errors, errors[:3]
        assert count[0] > 10 and len(digests) == 2
        with EncryIPClient(f"127.0.0.1:{server.port}") as client:
            x = sample_inputs(8)
            # The other licensee's file (same pk) serves after the reload, and acme's key
            # reads its outputs: the labels that file itself gives, computed in-process.
            # Not acme's labels: each licensee's weights carry their own fingerprint, so
            # a borderline input may fall on another class (this flaked once in CI).
            local = ProtectedModel.load(other, pool_capacity=0)
            want = decrypt_batch([row.tobytes() for row in local.predict(x)], key)
            local.close()
            runtime_copy(other, d)
            assert server.reload()
            np.testing.assert_array_equal(decrypt_batch(client.predict(x), key), want)
        import urllib.request

        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'encryip_model_reloads_total{result="failure"} 2.0' in text


def test_reload_by_polling(secure_release: Any, tmp_path: Path) -> None:
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    with running_server(d, reload_poll_seconds=0.05) as server:
        first = server.store.current
        assert first is not None
        runtime_copy(secure_release.licensee_dir("globex"), d)
        deadline = time.monotonic() + 10
        while server.store.current is first:
            assert time.monotonic() < deadline, "poller did not reload"
            time.sleep(0.05)


def _spawn_server(release_dir: Path, port: int, hport: int) -> subprocess.Popen[str]:
    env = dict(os.environ, ENCRYIP_HEALTH_PORT=str(hport), ENCRYIP_METRICS_PORT="0")
    return subprocess.Popen(
        [
            sys.executable, "-m", "encryip_runtime.cli.main", "serve", str(release_dir),
            "--host", "127.0.0.1", "--port", str(port), "--drain-seconds", "10",
            "--max-queue-delay-ms", "5",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _wait_serving(hport: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if health_status(hport) == SERVING:
                return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, "server did not become SERVING"
        time.sleep(0.1)


def test_sigterm_under_load_answers_every_accepted_request(
    secure_release: Any, tmp_path: Path
) -> None:
    port, hport = free_port(), free_port()
    proc = _spawn_server(secure_release.licensee_dir("acme"), port, hport)
    try:
        _wait_serving(hport, proc)
        outcomes: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def worker() -> None:
            with EncryIPClient(f"127.0.0.1:{port}", timeout=15) as client:
                while not stop.is_set():
                    try:
                        client.predict(sample_inputs(4))
                        outcome = "ok"
                    except RemoteError as exc:
                        outcome = exc.code
                    with lock:
                        outcomes.append(outcome)
                    if outcome != "ok":
                        return

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)  # reload under load, too
        time.sleep(0.7)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        stop.set()
        for t in threads:
            t.join(20)
        assert proc.returncode == 0, out
        assert outcomes.count("ok") > 8
        # Requests after the drain started are refused cleanly (UNAVAILABLE), never lost
        # mid-flight: an accepted request fails only with UNAVAILABLE at connect time.
        assert set(outcomes) <= {"ok", "UNAVAILABLE"}, set(outcomes)
        assert "reloaded model" in out
        assert "draining" in out and "stopped" in out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("which", ["port", "health_port"])
def test_busy_port_is_a_clear_error(secure_release: Any, which: str) -> None:
    """A port in use names the port; no thread or side port is left behind."""
    import socket

    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = threading.active_count()
        with pytest.raises(OSError, match=f"cannot bind .*127.0.0.1:{port}"):
            create_server(make_config(secure_release.licensee_dir("acme"), **{which: port}))
        deadline = time.monotonic() + 5
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before
