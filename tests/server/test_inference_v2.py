"""inference.GRPCInferenceService (Open Inference Protocol v2) with our own stubs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.server.tensors import unpack_bytes_elements

from .conftest import rpc_code, running_server, sample_inputs
from .test_encryip_service import plain_labels


@pytest.fixture(scope="module")
def v2(tiny_release: Any) -> Iterator[tuple[pb_grpc.GRPCInferenceServiceStub, Any]]:
    with (
        running_server(tiny_release.licensee_dir("acme")) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield pb_grpc.GRPCInferenceServiceStub(channel), tiny_release


def infer_request(x: np.ndarray, *, raw: bool = True, **kw: Any) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=kw.pop("model_name", "encryip"), id="r1")
    t = req.inputs.add(name=kw.pop("name", "pixels"), datatype=kw.pop("datatype", "UINT8"))
    t.shape.extend(x.shape)
    if raw:
        req.raw_input_contents.append(x.tobytes())
    else:
        t.contents.uint_contents.extend(x.reshape(-1).tolist())
    for name in kw.pop("outputs", []):
        req.outputs.add(name=name)
    return req


def test_metadata_and_readiness(v2: Any) -> None:
    stub, release = v2
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="encryip"), timeout=5).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="other"), timeout=5).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5).name == "encryip"
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="encryip"), timeout=5)
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        ("pixels", "UINT8", [-1, 1, 8, 8])
    ]
    names = [o.name for o in meta.outputs]
    assert names == (["ciphertext", "onehot"] if release.profile == "paper" else ["ciphertext"])
    assert meta.outputs[0].datatype == "BYTES"


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_infer_round_trip(v2: Any, raw: bool) -> None:
    stub, release = v2
    x = sample_inputs(6, seed=3)
    resp = stub.ModelInfer(infer_request(x, raw=raw), timeout=10)
    assert resp.id == "r1" and resp.outputs[0].name == "ciphertext"
    assert resp.outputs[0].datatype == "BYTES" and list(resp.outputs[0].shape) == [6]
    if raw:
        cts = unpack_bytes_elements(resp.raw_output_contents[0])
    else:
        cts = list(resp.outputs[0].contents.bytes_contents)
    key = LicenseeKey.load(release.key("acme"))
    np.testing.assert_array_equal(decrypt_batch(cts, key), plain_labels(release, "acme", x))


def test_onehot_output(v2: Any) -> None:
    stub, release = v2
    req = infer_request(sample_inputs(2), outputs=["ciphertext", "onehot"])
    if release.profile != "paper":
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req, timeout=10)
        assert rpc_code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
        return
    resp = stub.ModelInfer(req, timeout=10)
    onehot = np.frombuffer(resp.raw_output_contents[1], "<f4").reshape(2, 33)
    assert np.all(onehot.sum(axis=1) == 3)


def _bad(kind: str) -> pb.ModelInferRequest:
    x = sample_inputs(2)
    if kind == "dtype":
        return infer_request(x.astype(np.float32), datatype="FP32")
    if kind == "bytes_input":
        return infer_request(x, datatype="BYTES")
    if kind == "byte count":
        req = infer_request(x)
        req.raw_input_contents[0] = b"\0" * 5
        return req
    if kind == "shape":
        return infer_request(x.reshape(2, 1, 64))
    if kind == "empty batch":
        return infer_request(x[:0])
    if kind == "unknown model":
        return infer_request(x, model_name="resnet")
    if kind == "unknown input":
        return infer_request(x, name="image")
    if kind == "unknown output":
        return infer_request(x, outputs=["probabilities"])
    if kind == "no input":
        return pb.ModelInferRequest(model_name="encryip")
    if kind == "out of range":
        req = infer_request(x, raw=False)
        req.inputs[0].contents.uint_contents[0] = 300
        return req
    raise AssertionError(kind)


NEEDLES = {
    "dtype": "dtype",
    "bytes_input": "BYTES",
    "byte count": "byte count",
    "shape": "shape",
    "empty batch": "empty batch",
    "unknown model": "unknown model",
    "unknown input": "unknown input",
    "unknown output": "unknown output",
    "no input": "exactly 1 input",
    "out of range": "out of range",
}


@pytest.mark.parametrize("kind", sorted(NEEDLES))
def test_bad_infer_requests(v2: Any, kind: str) -> None:
    stub, _ = v2
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(_bad(kind), timeout=10)
    want = (
        grpc.StatusCode.NOT_FOUND if kind == "unknown model" else grpc.StatusCode.INVALID_ARGUMENT
    )
    assert rpc_code(info.value) == want
    assert NEEDLES[kind] in info.value.details(), info.value.details()
    assert stub.ModelInfer(infer_request(sample_inputs(1)), timeout=10).outputs
