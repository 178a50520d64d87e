"""Faults against a real server: SIGTERM and SIGHUP under load, bad reloads, clients that go
away, deadlines shorter than the queue delay, onnxruntime failing mid-batch.

tests/server/test_lifecycle.py covers the basic drain, one SIGHUP under load and a corrupt
model/truncated manifest on reload; these tests add what issue 8 asks beyond that.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server.conftest import free_port, running_server, runtime_copy, sample_inputs

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime.client import EncryIPClient, RemoteError, decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.server.app import EncryIPServer
from encryip_runtime.server.status import GENERIC_INFERENCE

from .helpers import LEAK_MARKERS, NOT_SERVING, SERVING, health_status, server_process

PREDICT = "encryip.v1.EncryIP/Predict"


def predict_request(x: np.ndarray) -> encryip_pb2.PredictRequest:
    return encryip_pb2.PredictRequest(
        input=encryip_pb2.Tensor(dtype="uint8", shape=list(x.shape), data=x.tobytes())
    )


def scrape(server: EncryIPServer) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels exactly), 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


# -- SIGTERM / SIGHUP under load (server in its own process) ---------------------------------


def test_sigterm_under_load_health_first_and_every_accepted_answered(
    secure_release: Any, tmp_path: Path
) -> None:
    """32 clients hammer the server; it reloads (SIGHUP, twice, files swapped) and then
    drains (SIGTERM). Health flips to NOT_SERVING before any request is refused; every
    request ends OK or with a clean UNAVAILABLE refusal; nothing else, nothing hangs."""
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    key = LicenseeKey.load(secure_release.key("acme"))
    port, hport = free_port(), free_port()
    with server_process(
        d, port, hport, "--drain-seconds", "10", "--max-queue-delay-ms", "2"
    ) as proc:
        flipped: list[float] = []

        def watch() -> None:  # the probe port's Watch stream sees the flip as it happens
            with grpc.insecure_channel(f"127.0.0.1:{hport}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    for msg in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
                        if msg.status == NOT_SERVING:
                            flipped.append(time.monotonic())
                            return
                except grpc.RpcError:
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        lock = threading.Lock()
        outcomes: list[tuple[str, float]] = []
        wrong_labels: list[int] = []
        stop = threading.Event()
        x = sample_inputs(4, seed=9)
        # The right labels are those of whichever file serves (acme's, then globex's after
        # a reload: same pk, other permutation, and its own weight fingerprint, which may
        # move a borderline input to another class), computed in-process.
        wants = []
        for src in ("acme", "globex"):
            local = ProtectedModel.load(secure_release.licensee_dir(src), pool_capacity=0)
            wants.append(decrypt_batch([row.tobytes() for row in local.predict(x)], key))
            local.close()
        with EncryIPClient(f"127.0.0.1:{port}") as first:
            assert np.array_equal(decrypt_batch(first.predict(x), key), wants[0])

        def worker() -> None:
            with EncryIPClient(f"127.0.0.1:{port}", timeout=20) as client:
                for _ in range(10_000):  # bounded; ends at the first refusal
                    if stop.is_set():
                        return
                    try:
                        labels = decrypt_batch(client.predict(x), key)
                        outcome = "ok"
                        if not any(np.array_equal(labels, w) for w in wants):
                            wrong_labels.append(1)
                    except RemoteError as exc:
                        outcome = exc.code
                    with lock:
                        outcomes.append((outcome, time.monotonic()))
                    if outcome != "ok":
                        return

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        wait_until(lambda: len(outcomes) > 50, 30)
        for src in ("globex", "acme"):  # variants: same pk, other permutation
            runtime_copy(secure_release.licensee_dir(src), d)
            proc.send_signal(signal.SIGHUP)
            n = len(outcomes)
            wait_until(lambda n=n: len(outcomes) > n + 50, 30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        stop.set()
        for t in threads:
            t.join(30)
        watcher.join(30)
    assert proc.returncode == 0, out
    assert out.count("reloaded model") == 2, out
    assert "Traceback" not in out
    codes = {o for o, _ in outcomes}
    assert codes <= {"ok", "UNAVAILABLE"}, codes
    assert not wrong_labels
    assert sum(o == "ok" for o, _ in outcomes) > 100
    refusals = [t for o, t in outcomes if o != "ok"]
    assert flipped, "health never went NOT_SERVING"
    assert not refusals or flipped[0] <= min(refusals), (flipped[0], min(refusals))


# -- bad releases on reload ----------------------------------------------------------------


def _mismatch_cases(secure: Any, paper: Any) -> dict[str, Any]:
    """name -> function(directory) that breaks the release in that way."""

    def other_model(d: Path) -> None:  # a model of another release: sha256 mismatch
        shutil.copy(paper.licensee_dir("acme") / "model.onnx", d / "model.onnx")

    def other_profile_manifest(d: Path) -> None:
        shutil.copy(paper.licensee_dir("acme") / "manifest.json", d / "manifest.json")

    def missing_model(d: Path) -> None:
        (d / "model.onnx").unlink()

    def secret_appears(d: Path) -> None:  # someone drops the vault beside the model
        shutil.copy(secure.paths.vault, d / "vault.json")

    def manifest_not_json(d: Path) -> None:
        (d / "manifest.json").write_bytes(b"\xff\xfe not json")

    return {
        "other_model": other_model,
        "other_profile_manifest": other_profile_manifest,
        "missing_model": missing_model,
        "secret_appears": secret_appears,
        "manifest_not_json": manifest_not_json,
    }


def test_bad_reloads_keep_old_model_logged_and_counted(
    secure_release: Any, paper_release: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = LicenseeKey.load(secure_release.key("acme"))
    x = sample_inputs(6, seed=4)
    cases = _mismatch_cases(secure_release, paper_release)
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    with running_server(d, metrics_port=free_port()) as server:
        good = server.store.current
        client = EncryIPClient(f"127.0.0.1:{server.port}")
        want = decrypt_batch(client.predict(x), key)
        failures_before = metric(scrape(server), 'encryip_model_reloads_total{result="failure"}')
        for name, breaks in cases.items():
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="encryip_runtime.server.model_store"):
                breaks(d)
                assert not server.reload(), name
            assert server.store.current is good, name
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors and "previous model keeps serving" in errors[0].getMessage(), name
            np.testing.assert_array_equal(decrypt_batch(client.predict(x), key), want)
            # Restore the good release for the next case.
            (d / "vault.json").unlink(missing_ok=True)
            runtime_copy(secure_release.licensee_dir("acme"), d)
        text = scrape(server)
        failed = metric(text, 'encryip_model_reloads_total{result="failure"}') - failures_before
        assert failed == len(cases)
        assert health_status(server.port) == SERVING
        assert server.reload()  # and a good release still goes in
        client.close()


# -- clients that go away, deadlines shorter than the queue delay --------------------------


class GatedSession:
    """An onnxruntime session whose ``run`` waits on a gate and counts the rows it ran."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.rows = 0

    @classmethod
    def install(cls, server: EncryIPServer) -> GatedSession:
        """Swap the serving model's onnxruntime session for a gated one."""
        loaded = server.store.current
        assert loaded is not None
        gated = cls(loaded.model.session)
        loaded.model.session = gated
        return gated

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, outputs: Any, feed: dict[str, np.ndarray]) -> Any:
        self.entered.set()
        assert self.gate.wait(20)
        self.rows += len(next(iter(feed.values())))
        return self.inner.run(outputs, feed)


def test_client_disconnect_mid_request(secure_release: Any) -> None:
    """Clients cancel while their requests wait: those never reach the model, the one in the
    model finishes, and the server answers the next client normally."""
    with running_server(
        secure_release.licensee_dir("acme"),
        max_batch=1,
        max_queue_delay_ms=0,
        reroll_pool=0,
        batch_threads=1,  # the eight then wait in the queue, not on a second thread
    ) as server:
        gated = GatedSession.install(server)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            first = stub.Predict.future(predict_request(sample_inputs(1)), timeout=30)
            assert gated.entered.wait(10)
            queued = [
                stub.Predict.future(predict_request(sample_inputs(1, seed=i)), timeout=30)
                for i in range(8)
            ]
            wait_until(lambda: server.batcher.depth == 8)
            for f in queued:
                assert f.cancel()
            wait_until(lambda: _cancelled(server) == 8, 10)
            gated.gate.set()
            assert len(first.result(timeout=20).ciphertexts) == 1
            for f in queued:
                assert f.cancelled()
            after = stub.Predict(predict_request(sample_inputs(3)), timeout=20)
            assert len(after.ciphertexts) == 3
        assert gated.rows == 1 + 3  # the cancelled eight never ran
        assert server.batcher.depth == 0
        assert health_status(server.port) == SERVING


def test_model_stuck_in_onnxruntime_blocks_nothing_else(secure_release: Any) -> None:
    """The event loop never runs the model: while a batch hangs in onnxruntime, health,
    model info and new requests (queued) are still answered at once."""
    with running_server(
        secure_release.licensee_dir("acme"), max_batch=1, batch_threads=1
    ) as server:
        gated = GatedSession.install(server)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            stuck = stub.Predict.future(predict_request(sample_inputs(1)), timeout=30)
            assert gated.entered.wait(10)
            t0 = time.monotonic()
            assert health_status(server.port) == SERVING
            info = stub.GetModelInfo(encryip_pb2.GetModelInfoRequest(), timeout=2)
            assert info.model_name == server.store.current.name  # type: ignore[union-attr]
            queued = stub.Predict.future(predict_request(sample_inputs(2)), timeout=30)
            wait_until(lambda: server.batcher.depth == 1)
            assert time.monotonic() - t0 < 2.0
            gated.gate.set()
            assert len(stuck.result(timeout=20).ciphertexts) == 1
            assert len(queued.result(timeout=20).ciphertexts) == 2


def _cancelled(server: EncryIPServer) -> float:
    """Predict calls the server has seen cancelled (its own metrics)."""
    value = server.metrics.registry.get_sample_value(
        "encryip_requests_total",
        {"method": "encryip.v1.EncryIP/Predict", "code": "CANCELLED"},
    )
    return value or 0.0


def test_deadline_shorter_than_queue_delay(secure_release: Any) -> None:
    """A request queued behind a slow batch for longer than its 0.2 s deadline gets
    DEADLINE_EXCEEDED (counted), never runs, and the server answers patient requests."""
    with running_server(
        secure_release.licensee_dir("acme"),
        max_batch=64,
        max_queue_delay_ms=1000,
        metrics_port=free_port(),
        reroll_pool=0,
    ) as server:
        gated = GatedSession.install(server)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            slow = stub.Predict.future(predict_request(sample_inputs(3)), timeout=30)
            assert gated.entered.wait(10)  # the network is busy: what comes next queues
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(predict_request(sample_inputs(2)), timeout=0.2)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - t0 < 5
            gated.gate.set()
            assert len(slow.result(timeout=20).ciphertexts) == 3
            patient = stub.Predict(predict_request(sample_inputs(5)), timeout=10)
            assert len(patient.ciphertexts) == 5
        assert gated.rows == 3 + 5  # the expired request's rows never reached onnxruntime
        # Counted as what it was (operators alert on errors by code), not as CANCELLED.
        text = scrape(server)
        assert metric(text, f'encryip_requests_total{{code="OK",method="{PREDICT}"}}') == 2
        assert (
            metric(text, f'encryip_requests_total{{code="DEADLINE_EXCEEDED",method="{PREDICT}"}}')
            == 1
        )
        assert health_status(server.port) == SERVING


# -- onnxruntime raising mid-batch ---------------------------------------------------------

POISON = 251  # rows whose first pixel is this make the injected session raise
SECRET_DETAIL = "injected-failure-detail-7f3a"


class PoisonSession:
    """Raises (like onnxruntime's own errors) for a batch holding a poison row."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed_batches = 0

    @classmethod
    def install(cls, server: EncryIPServer) -> GatedSession:
        """Swap the serving model's onnxruntime session for a gated one."""
        loaded = server.store.current
        assert loaded is not None
        gated = cls(loaded.model.session)
        loaded.model.session = gated
        return gated

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, outputs: Any, feed: dict[str, np.ndarray]) -> Any:
        x = next(iter(feed.values()))
        if (x.reshape(len(x), -1)[:, 0] == POISON).any():
            self.failed_batches += 1
            raise RuntimeError(f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : {SECRET_DETAIL}")
        return self.inner.run(outputs, feed)


def test_onnxruntime_failure_fails_only_that_batch(
    secure_release: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = LicenseeKey.load(secure_release.key("acme"))
    with running_server(
        secure_release.licensee_dir("acme"), max_batch=4, max_queue_delay_ms=5,
        metrics_port=free_port(),
    ) as server:  # fmt: skip
        loaded = server.store.current
        assert loaded is not None
        poison = PoisonSession(loaded.model.session)
        loaded.model.session = poison
        bad = sample_inputs(1, seed=1)
        bad[0, 0, 0, 0] = POISON
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            for round_ in range(5):
                goods = [
                    stub.Predict.future(
                        predict_request(_clean(sample_inputs(1, seed=100 * round_ + i))),
                        timeout=20,
                    )
                    for i in range(6)
                ]
                with pytest.raises(grpc.RpcError) as info:
                    stub.Predict(predict_request(bad), timeout=20)
                assert info.value.code() == grpc.StatusCode.INTERNAL
                assert info.value.details() == GENERIC_INFERENCE
                for marker in (*LEAK_MARKERS, SECRET_DETAIL, "RuntimeError"):
                    assert marker not in info.value.details()
                # Requests that shared the poisoned batch fail the same way; others succeed.
                outcomes = []
                for f in goods:
                    try:
                        outcomes.append(len(f.result().ciphertexts))
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.INTERNAL
                        assert exc.details() == GENERIC_INFERENCE
                        outcomes.append(0)
                assert outcomes.count(1) >= 6 - 3  # at most max_batch - 1 shared the batch
        assert poison.failed_batches >= 5
        text = scrape(server)
        assert 'code="INTERNAL"' in text and SECRET_DETAIL not in text
        assert any("inference failed" in r.getMessage() for r in caplog.records if r.levelno >= 40)
        # The server lives on: healthy, and right.
        assert health_status(server.port) == SERVING
        with EncryIPClient(f"127.0.0.1:{server.port}") as client:
            x = _clean(sample_inputs(16, seed=77))
            labels = decrypt_batch(client.predict(x), key)
            assert len(labels) == 16


def _clean(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[x == POISON] = 0
    return x
