"""encryip.v1 against a real server: round trip, model info, bad inputs, limits, metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime.client import EncryIPClient, RemoteError, decrypt, decrypt_batch, load_key
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.server.app import EncryIPServer

from .conftest import free_port, rpc_code, running_server, sample_inputs


@pytest.fixture(scope="module")
def served(tiny_release: Any) -> Iterator[tuple[EncryIPServer, Any]]:
    with running_server(tiny_release.licensee_dir("acme"), metrics_port=free_port()) as server:
        yield server, tiny_release


@pytest.fixture(scope="module")
def stub(served: tuple[EncryIPServer, Any]) -> Iterator[encryip_pb2_grpc.EncryIPStub]:
    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield encryip_pb2_grpc.EncryIPStub(channel)


def plain_labels(release: Any, licensee: str, x: np.ndarray) -> np.ndarray:
    """The label the network computes, without the server: Φ⁻¹(logits) decrypted."""
    pm = ProtectedModel.load(release.licensee_dir(licensee))
    key = LicenseeKey.load(release.key(licensee))
    return key.scheme.decrypt_labels(key.sk, pm.transfer.phi_inv(pm.logits(x)))


def tensor(x: np.ndarray, dtype: str | None = None) -> encryip_pb2.Tensor:
    return encryip_pb2.Tensor(
        dtype=dtype or x.dtype.name, shape=list(x.shape), data=np.ascontiguousarray(x).tobytes()
    )


def test_round_trip_matches_plain_network(served: tuple[EncryIPServer, Any]) -> None:
    server, release = served
    x = sample_inputs(40, seed=1)
    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        key = client.load_key(release.key("acme"))
        pred = client.predict(x)
        assert len(pred) == 40
        assert all(len(ct) == key.scheme.ciphertext_size for ct in pred)
        labels = decrypt_batch(pred, key)
        np.testing.assert_array_equal(labels, plain_labels(release, "acme", x))
        assert decrypt(pred[0], key) == labels[0]
        # Fresh ciphertexts every time: same input, no shared component.
        if release.profile == "secure":
            again = client.predict(x[:1])
            w = key.scheme.ciphertext_size // 3
            for k in range(3):
                assert again[0][k * w : (k + 1) * w] != pred[0][k * w : (k + 1) * w]
        else:
            # Z_11^*: a re-randomiser r = 0 (probability 1/10) returns the input unchanged,
            # so only many draws show freshness.
            draws = {client.predict(x[:1])[0] for _ in range(20)}
            assert len(draws) > 3
        # One image without the batch axis works in the SDK.
        assert len(client.predict(x[0])) == 1


def test_model_info(served: tuple[EncryIPServer, Any]) -> None:
    server, release = served
    pm = ProtectedModel.load(release.licensee_dir("acme"))
    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        info = client.info()
    m = pm.manifest
    assert info.model_name == m.model_name == "encryip"
    assert info.profile == release.profile and info.num_classes == release.num_classes
    assert info.class_names == m.class_names
    assert info.manifest_digest == m.digest
    assert info.ciphertext_size == m.scheme.ciphertext_size
    assert info.input_shape == (-1, 1, 8, 8) and info.input_dtype == "uint8"
    assert info.pk == tuple(str(m.scheme.group.to_json(p)[0]) for p in m.pk.parts())
    assert (info.onehot_size > 0) == (release.profile == "paper")


def test_wrong_key_refused(served: tuple[EncryIPServer, Any], tmp_path: Any) -> None:
    server, release = served
    from tiny_release import make_tiny_release

    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        # The paper group is tiny: another release can share the pk by chance; redraw.
        for attempt in range(10):
            other = make_tiny_release(tmp_path / f"o{attempt}", release.profile, licensees=("zed",))
            other_pk = LicenseeKey.load(other.key("zed")).pk
            if other_pk != LicenseeKey.load(release.key("acme")).pk:
                break
        with pytest.raises(Exception, match="does not belong to the server's public key"):
            client.load_key(other.key("zed"))
        with pytest.raises(Exception, match="does not belong"):
            load_key(other.key("zed"), expected_pk=client.info().pk)


def test_onehot_form(served: tuple[EncryIPServer, Any], stub: Any) -> None:
    _, release = served
    x = sample_inputs(3)
    request = encryip_pb2.PredictRequest(input=tensor(x), return_onehot=True)
    if release.profile == "secure":
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=10)
        assert rpc_code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
        assert "paper profile" in info.value.details()
        return
    resp = stub.Predict(request, timeout=10)
    onehot = np.frombuffer(resp.onehot.data, "<f4").reshape(tuple(resp.onehot.shape))
    p = onehot.shape[1] // 3
    assert onehot.shape == (3, 33) and np.all(onehot.sum(axis=1) == 3)
    for row, ct in zip(onehot, resp.ciphertexts, strict=True):
        u = [int.from_bytes(ct[2 * k : 2 * k + 2], "big") for k in range(3)]
        assert [int(np.argmax(row[k * p : (k + 1) * p])) for k in range(3)] == u


X = sample_inputs(2)
BAD_REQUESTS = {
    "wrong dtype": (encryip_pb2.PredictRequest(input=tensor(X.astype(np.float32))), "dtype"),
    "unknown dtype": (encryip_pb2.PredictRequest(input=tensor(X, "complex64")), "dtype"),
    "wrong shape": (encryip_pb2.PredictRequest(input=tensor(X.reshape(2, 1, 4, 16))), "shape"),
    "wrong rank": (encryip_pb2.PredictRequest(input=tensor(X.reshape(2, 64))), "shape"),
    "byte count": (
        encryip_pb2.PredictRequest(
            input=encryip_pb2.Tensor(dtype="uint8", shape=[2, 1, 8, 8], data=b"\0" * 127)
        ),
        "byte count",
    ),
    "negative dim": (
        encryip_pb2.PredictRequest(
            input=encryip_pb2.Tensor(dtype="uint8", shape=[-2, 1, 8, 8], data=b"")
        ),
        "negative",
    ),
    "empty batch": (
        encryip_pb2.PredictRequest(
            input=encryip_pb2.Tensor(dtype="uint8", shape=[0, 1, 8, 8], data=b"")
        ),
        "empty batch",
    ),
    "no input": (encryip_pb2.PredictRequest(), "missing input"),
    "unknown model": (
        encryip_pb2.PredictRequest(model_name="resnet", input=tensor(X)),
        "unknown model",
    ),
    "huge shape": (
        encryip_pb2.PredictRequest(
            input=encryip_pb2.Tensor(dtype="uint8", shape=[2**40, 2**40, 8, 8], data=b"")
        ),
        "byte count",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_invalid_argument(stub: Any, case: str) -> None:
    request, needle = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=10)
    want = (
        grpc.StatusCode.NOT_FOUND if case == "unknown model" else grpc.StatusCode.INVALID_ARGUMENT
    )
    assert rpc_code(info.value) == want
    assert needle in info.value.details(), info.value.details()
    ok = stub.Predict(encryip_pb2.PredictRequest(input=tensor(X)), timeout=10)
    assert len(ok.ciphertexts) == 2


def test_nan_and_inf_rejected_for_float_inputs() -> None:
    from encryip_runtime.exceptions import InputError
    from encryip_runtime.server.tensors import InputSpec, check_input

    spec = InputSpec("x", "float32", (1, 1, 2))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(InputError, match="NaN or infinite"):
            check_input(np.array([[[[1.0, bad]]]], np.float32), spec)
    check_input(np.array([[[[1.0, 2.0]]]], np.float32), spec)


def test_unknown_model_info(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelInfo(encryip_pb2.GetModelInfoRequest(model_name="nope"), timeout=10)
    assert rpc_code(info.value) == grpc.StatusCode.NOT_FOUND


def test_oversize_message_resource_exhausted(secure_release: Any) -> None:
    release_dir = secure_release.licensee_dir("acme")
    with (
        running_server(release_dir, max_message_bytes=32 * 1024) as srv,
        EncryIPClient(f"127.0.0.1:{srv.port}") as client,
    ):
        with pytest.raises(RemoteError) as info:
            client.predict(sample_inputs(1000))
        assert info.value.code == "RESOURCE_EXHAUSTED"
        assert len(client.predict(sample_inputs(4))) == 4


def test_metrics_exposed_without_secrets(served: tuple[EncryIPServer, Any]) -> None:
    server, _ = served
    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        pred = client.predict(sample_inputs(3))
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for name in (
        "encryip_queue_seconds",
        "encryip_inference_seconds",
        "encryip_crypto_seconds",
        "encryip_request_seconds",
        "encryip_batch_rows",
    ):
        assert f"{name}_count" in text, name
    assert 'encryip_requests_total{code="OK",method="encryip.v1.EncryIP/Predict"}' in text
    # CPU per stage: both stages ran on a batch thread and took some CPU
    cpu = {
        line.split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("encryip_batch_cpu_seconds_total{")
    }
    assert set(cpu) == {"inference", "protection"} and all(v > 0 for v in cpu.values()), cpu
    assert 'code="INVALID_ARGUMENT"' in text
    assert pred[0].hex() not in text


def test_no_deadline(stub: Any) -> None:
    """A call without a deadline (tritonclient's default) waits as long as it takes."""
    resp = stub.Predict(encryip_pb2.PredictRequest(input=tensor(X)))
    assert len(resp.ciphertexts) == 2


def test_one_input_spec_and_one_check_on_the_request_path(
    secure_release: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest's InputSpec is the server's; a served batch is checked once
    (server/tensors.check_input), not again inside the model."""
    from encryip_runtime.formats.manifest import InputSpec as ManifestSpec
    from encryip_runtime.pipeline import ProtectedModel
    from encryip_runtime.server import tensors

    assert tensors.InputSpec is ManifestSpec
    calls = {"check_input": 0, "validate_input": 0}
    real_check, real_validate = tensors.check_input, ProtectedModel.validate_input

    def check(*a: Any) -> None:
        calls["check_input"] += 1
        real_check(*a)

    def validate(self: Any, x: Any) -> Any:
        calls["validate_input"] += 1
        return real_validate(self, x)

    import encryip_runtime.server.predictor as predictor

    monkeypatch.setattr(predictor, "check_input", check)
    monkeypatch.setattr(ProtectedModel, "validate_input", validate)
    with running_server(secure_release.licensee_dir("acme")) as srv:
        loaded = srv.store.current
        assert loaded is not None and isinstance(loaded.spec, ManifestSpec)
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            stub.Predict(encryip_pb2.PredictRequest(input=tensor(X)), timeout=10)
    assert calls == {"check_input": 1, "validate_input": 0}
