"""--reroll-pool and --max-connection-age-seconds: parsed, wired into the server, in effect."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.server.config import ConfigError, ServerConfig

from .conftest import gate_current_model, running_server, sample_inputs


def wait_for(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def components(wire: np.ndarray) -> set[bytes]:
    """Every 32-byte component (u1, u2, u3) of every row."""
    return {bytes(row[k * 32 : (k + 1) * 32]) for row in wire for k in range(3)}


def predict(port: int, x: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = encryip_pb2_grpc.EncryIPStub(channel)
        resp = stub.Predict(
            encryip_pb2.PredictRequest(
                input=encryip_pb2.Tensor(dtype="uint8", shape=list(x.shape), data=x.tobytes())
            ),
            timeout=10,
        )
    return np.frombuffer(b"".join(resp.ciphertexts), dtype=np.uint8).reshape(len(x), -1)


# -- config ----------------------------------------------------------------------------


def test_flags_and_env(tmp_path: Path) -> None:
    cfg = ServerConfig.from_args([str(tmp_path)], environ={})
    assert cfg.reroll_pool == 0 and cfg.max_connection_age_seconds == 300.0
    env = {"ENCRYIP_REROLL_POOL": "0", "ENCRYIP_MAX_CONNECTION_AGE_SECONDS": "0"}
    cfg = ServerConfig.from_args([str(tmp_path)], environ=env)
    assert cfg.reroll_pool == 0 and cfg.max_connection_age_seconds == 0
    assert cfg.grpc_connection_options() == []
    cfg = ServerConfig.from_args(
        [str(tmp_path), "--reroll-pool", "64", "--max-connection-age-seconds", "1.5"],
        environ=env,
    )
    assert cfg.reroll_pool == 64
    assert dict(cfg.grpc_connection_options()) == {
        "grpc.max_connection_age_ms": 1500,
        "grpc.max_connection_age_grace_ms": round(cfg.drain_seconds * 1000),
    }
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_args(
            [str(tmp_path), "--reroll-pool", "-1", "--max-connection-age-seconds", "x"],
            environ={},
        )
    text = "\n".join(info.value.problems)
    assert "--max-connection-age-seconds: not a number" in text
    with pytest.raises(ConfigError, match="--reroll-pool: must not be negative"):
        ServerConfig.from_args([str(tmp_path), "--reroll-pool", "-1"], environ={})


# -- re-randomiser pool ------------------------------------------------------------------


def test_pool_drains_refills_and_never_repeats(secure_release: Any) -> None:
    pm = ProtectedModel.load(secure_release.licensee_dir("acme"), pool_capacity=48)
    try:
        pool = pm.pool
        assert pool is not None and pool.capacity == 48
        assert wait_for(lambda: pool.size == 48)
        inline: list[int] = []
        scheme_rer = pm.scheme.rerandomizers

        def counting(pk: Any, count: int, scalars: Any = None) -> Any:
            if threading.current_thread().name != "rerandomizer-pool":
                inline.append(count)
            return scheme_rer(pk, count, scalars)

        pm.scheme.rerandomizers = counting  # type: ignore[method-assign]
        seen: set[bytes] = set()
        total = 0
        for n in (10, 30, 60):  # the last one drains the pool: part of it comes inline
            r1, r2, r3 = pool.take(n)
            assert len(r1) == len(r2) == len(r3) == n
            for part in (r1, r2, r3):
                rows = {bytes(row) for row in part}
                assert len(rows) == n and not rows & seen
                seen |= rows
            total += n
            assert pool.size <= pool.capacity
        assert inline and sum(inline) < total  # the pool supplied most, inline only the rest
        assert wait_for(lambda: pool.size == 48)  # refilled
        time.sleep(0.05)
        assert pool.size == 48  # and never beyond its capacity
    finally:
        pm.close()


def test_pool_off_for_zero_and_paper(secure_release: Any, paper_release: Any) -> None:
    pm = ProtectedModel.load(secure_release.licensee_dir("acme"), pool_capacity=0)
    assert pm.pool is None
    pm = ProtectedModel.load(paper_release.licensee_dir("acme"), pool_capacity=16)
    assert pm.pool is None


def test_server_uses_pool_and_responses_share_nothing(secure_release: Any) -> None:
    key = LicenseeKey.load(secure_release.key("acme"))
    x = np.repeat(sample_inputs(1, seed=3), 8, axis=0)  # the same image 8 times
    with running_server(secure_release.licensee_dir("acme"), reroll_pool=32) as server:
        current = server.store.current
        assert current is not None
        pool = current.model.pool
        assert pool is not None and pool.capacity == 32
        assert wait_for(lambda: pool.size == 32)
        a = predict(server.port, x)
        b = predict(server.port, x)
        # Fresh SampDist per row and per response: no component appears twice anywhere.
        assert len(components(a) | components(b)) == 2 * 3 * len(x)
        labels = decrypt_batch([bytes(r) for r in np.concatenate([a, b])], key)
        assert len(set(labels.tolist())) == 1  # same input, same label
        assert wait_for(lambda: pool.size == 32)  # refilled after serving
    with running_server(secure_release.licensee_dir("acme"), reroll_pool=0) as server:
        current = server.store.current
        assert current is not None and current.model.pool is None
        assert predict(server.port, x).shape == a.shape


def test_reload_keeps_pool_setting(secure_release: Any) -> None:
    with running_server(secure_release.licensee_dir("acme"), reroll_pool=16) as server:
        old = server.store.current
        assert server.reload()
        new = server.store.current
        assert old is not None and new is not None and new is not old
        assert new.model.pool is not None and new.model.pool.capacity == 16


# -- max connection age ------------------------------------------------------------------


def _states(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=False)
    return seen


def test_max_connection_age_closes_connections(secure_release: Any) -> None:
    """The server sends GOAWAY after the age: the client's channel leaves READY by itself."""
    x = sample_inputs(1)
    with running_server(
        secure_release.licensee_dir("acme"), max_connection_age_seconds=0.5, reroll_pool=0
    ) as server:
        assert ("grpc.max_connection_age_ms", 500) in server._main_options
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            seen = _states(channel)
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            req = encryip_pb2.PredictRequest(
                input=encryip_pb2.Tensor(dtype="uint8", shape=list(x.shape), data=x.tobytes())
            )
            stub.Predict(req, timeout=10)
            assert wait_for(lambda: grpc.ChannelConnectivity.READY in seen, 5)
            # 0.5 s age (+10% jitter) -> GOAWAY -> the channel goes IDLE without our doing.
            assert wait_for(lambda: seen[-1] == grpc.ChannelConnectivity.IDLE, 5), seen
            stub.Predict(req, timeout=10)  # and reconnects transparently


def test_unlimited_connection_age_keeps_connection(secure_release: Any) -> None:
    x = sample_inputs(1)
    with running_server(
        secure_release.licensee_dir("acme"), max_connection_age_seconds=0, reroll_pool=0
    ) as server:
        assert not any("max_connection_age" in k for k, _ in server._main_options)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            seen = _states(channel)
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            stub.Predict(
                encryip_pb2.PredictRequest(
                    input=encryip_pb2.Tensor(dtype="uint8", shape=list(x.shape), data=x.tobytes())
                ),
                timeout=10,
            )
            time.sleep(1.5)
            assert seen[-1] == grpc.ChannelConnectivity.READY, seen


# -- crypto threads ----------------------------------------------------------------------


def test_crypto_threads_split_a_batch_and_stay_correct(secure_release: Any) -> None:
    """--crypto-threads 3: a 40-row batch is protected by three threads; every row decrypts
    to the same label as with one thread, and no component repeats."""
    cfg = ServerConfig.from_args([str(secure_release.root), "--crypto-threads", "3"], environ={})
    assert cfg.crypto_threads == 3
    with pytest.raises(ConfigError, match="--crypto-threads: must be at least 1"):
        ServerConfig.from_args([str(secure_release.root), "--crypto-threads", "0"], environ={})
    key = LicenseeKey.load(secure_release.key("acme"))
    x = sample_inputs(40, seed=5)
    one = ProtectedModel.load(secure_release.licensee_dir("acme"))
    many = ProtectedModel.load(secure_release.licensee_dir("acme"), crypto_threads=3)
    try:
        names: set[str] = set()
        original = many.scheme.sampdist_codebook

        def spy(*args: Any, **kw: Any) -> Any:
            names.add(threading.current_thread().name)
            return original(*args, **kw)

        many.scheme.sampdist_codebook = spy  # type: ignore[method-assign]
        w1, w3 = one.predict(x), many.predict(x)
        assert len({n for n in names if n.startswith("encryip-sampdist")}) >= 1
        assert len(names) >= 2  # the caller took a share, helpers the rest
        assert w3.shape == w1.shape
        assert np.array_equal(decrypt_batch(list(w1), key), decrypt_batch(list(w3), key))
        comps = components(np.concatenate([w1, w3]))
        assert len(comps) == 2 * 3 * len(x)
        assert many.predict(x[:3]).shape == (3, w1.shape[1])  # small batches: caller only
    finally:
        one.close()
        many.close()
    with running_server(secure_release.licensee_dir("acme"), crypto_threads=2) as server:
        wire = predict(server.port, x)
        assert np.array_equal(decrypt_batch(list(wire), key), decrypt_batch(list(w1), key))


def test_reload_under_load_with_crypto_threads(secure_release: Any, tmp_path: Path) -> None:
    """--crypto-threads 2: a batch of the old model still in flight when a reload closes it
    is split across the server's crypto pool and answered (it used to get INTERNAL:
    "cannot schedule new futures after shutdown"), and so are requests under reloads."""
    from .conftest import runtime_copy

    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "serve")
    key = LicenseeKey.load(secure_release.key("acme"))
    x = sample_inputs(32, seed=3)
    want = decrypt_batch(list(ProtectedModel.load(d).predict(x)), key)
    with running_server(d, crypto_threads=2) as server:
        assert server.crypto_pool.threads == 2
        gated = gate_current_model(server)
        result: dict[str, Any] = {}

        def held() -> None:
            try:
                result["wire"] = predict(server.port, x)
            except Exception as exc:  # reported below
                result["error"] = exc

        caller = threading.Thread(target=held)
        caller.start()
        assert gated.entered.wait(10)
        assert server.reload()  # closes the old model while its batch is in flight
        gated.gate.set()
        caller.join(20)
        assert "error" not in result, result.get("error")
        assert np.array_equal(decrypt_batch(list(result["wire"]), key), want)
        # and under load: 32-row requests (split across the pool) across reloads
        stop, errors = threading.Event(), []

        def load() -> None:
            while not stop.is_set():
                try:
                    predict(server.port, x)
                except Exception as exc:
                    errors.append(repr(exc))

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        for _ in range(3):
            assert server.reload()
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.join(20)
        assert not errors, errors[:3]


def test_crypto_threads_auto_and_backend_reported(secure_release: Any, tmp_path: Path) -> None:
    """auto (the default) leaves the event loop and onnxruntime their cores; the backend
    and thread count appear in GetModelInfo and in the metrics."""
    from encryip_runtime.pipeline import auto_crypto_threads

    cfg = ServerConfig.from_args([str(secure_release.root)], environ={})
    assert cfg.crypto_threads == 0  # auto
    auto = ServerConfig.from_args([str(secure_release.root), "--crypto-threads", "auto"], {})
    assert auto.crypto_threads == 0
    assert auto_crypto_threads(0, cores=2) == 1  # a 2-core CPU pod: the batch thread only
    assert auto_crypto_threads(0, cores=16) == 1  # onnxruntime's default takes every core
    assert auto_crypto_threads(0, cores=16, on_gpu=True) == 14
    assert auto_crypto_threads(4, cores=16) == 11
    assert auto_crypto_threads(8, cores=4) == 1
    from encryip_runtime.pipeline import _cgroup_cpu_limit

    limit = tmp_path / "cpu.max"
    for text, want in [("max 100000\n", None), ("400000 100000\n", 4), ("150000 100000", 2)]:
        limit.write_text(text)
        assert _cgroup_cpu_limit(limit) == want
    assert _cgroup_cpu_limit(tmp_path / "absent") is None
    from .conftest import free_port

    with running_server(
        secure_release.licensee_dir("acme"), crypto_threads=2, metrics_port=free_port()
    ) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            info = stub.GetModelInfo(encryip_pb2.GetModelInfoRequest(), timeout=10)
        backend = server.store.current.model.crypto_backend  # type: ignore[union-attr]
        assert info.crypto_backend == backend in ("native", "libsodium")
        import urllib.request

        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        from encryip_runtime.crypto import r255_native

        simd = r255_native.simd() if backend == "native" else "none"
        info_line = f'encryip_crypto_info{{backend="{backend}",simd="{simd}",threads="2"}} 1.0'
        assert info_line in text, [ln for ln in text.splitlines() if "crypto_info" in ln]
