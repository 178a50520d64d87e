"""Fuzz request tensors of both gRPC services against a real server on 127.0.0.1 (port 0),
and the ``.npy`` / image inputs of ``encryip predict``.

Every response is OK (with one ciphertext per row) or a proper status (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, NOT_FOUND for an unknown model) whose message leaks no internals; the
server stays healthy after.
The CLI exits 0, 1 or 2 with its problems on stderr: never a traceback, never
"unexpected <Exception>" (its catch-all for errors nobody typed).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server.conftest import running_server, sample_inputs

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.cli.main import main
from encryip_runtime.server.app import EncryIPServer
from encryip_runtime.server.tensors import KSERVE_DATATYPES

from .helpers import INPUT_CODES, LEAK_MARKERS, SERVING, health_status

GRPC_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ROW_BYTES = 64  # uint8 [1, 8, 8]

NUMPY_NAMES = sorted(set(KSERVE_DATATYPES.values()))
dtype_names = st.sampled_from([*NUMPY_NAMES, "complex64", "object", "", "uint8 "]) | st.text(
    max_size=12
)
kserve_names = st.sampled_from([*KSERVE_DATATYPES, "BYTES", "uint8", ""]) | st.text(max_size=8)
dims = st.integers(-(2**63), 2**63 - 1) | st.integers(-1, 9) | st.sampled_from([1, 8])
shapes = st.lists(dims, max_size=9) | st.tuples(
    st.integers(1, 40), st.sampled_from([1, 2]), st.sampled_from([8, 7]), st.just(8)
).map(list)


@st.composite
def tensor_bytes(draw: st.DrawFn, shape: list[int], itemsize: int) -> bytes:
    """Often exactly the right size for ``shape`` (so the content gets checked), else any."""
    count = math.prod(shape) if shape and all(d >= 0 for d in shape) else -1
    size = count * itemsize
    if 0 <= size <= 8192 and draw(st.booleans()):
        return draw(st.binary(min_size=size, max_size=size))
    return draw(st.binary(max_size=300))


@pytest.fixture(scope="module")
def served(tiny_release: Any) -> Iterator[tuple[EncryIPServer, grpc.Channel]]:
    with (
        running_server(tiny_release.licensee_dir("acme"), max_queue_delay_ms=0.5) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield server, channel
        # After everything the fuzzers sent: still SERVING and still right.
        assert health_status(server.port) == SERVING
        ok = encryip_pb2_grpc.EncryIPStub(channel).Predict(
            encryip_pb2.PredictRequest(
                input=encryip_pb2.Tensor(
                    dtype="uint8", shape=[3, 1, 8, 8], data=sample_inputs(3).tobytes()
                )
            ),
            timeout=10,
        )
        assert len(ok.ciphertexts) == 3


def check_refusal(exc: grpc.RpcError) -> None:
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    assert code in INPUT_CODES, (code, details)
    assert details and len(details) < 1000, details
    for marker in LEAK_MARKERS:
        assert marker not in details, details


@GRPC_FUZZ
@given(
    dtype=dtype_names,
    shape=shapes,
    data=st.data(),
    model_name=st.sampled_from(["", "encryip"]) | st.text(max_size=200),
    onehot=st.booleans(),
)
def test_predict_tensors(
    served: tuple[EncryIPServer, grpc.Channel],
    dtype: str,
    shape: list[int],
    data: st.DataObject,
    model_name: str,
    onehot: bool,
) -> None:
    _server, channel = served
    itemsize = np.dtype(dtype).itemsize if dtype in NUMPY_NAMES else 1
    raw = data.draw(tensor_bytes(shape, itemsize))
    request = encryip_pb2.PredictRequest(
        model_name=model_name,
        input=encryip_pb2.Tensor(dtype=dtype, shape=shape, data=raw),
        return_onehot=onehot,
        request_id=data.draw(st.text(max_size=20)),
    )
    try:
        resp = encryip_pb2_grpc.EncryIPStub(channel).Predict(request, timeout=10)
    except grpc.RpcError as exc:
        check_refusal(exc)
        return
    assert dtype == "uint8" and shape[1:] == [1, 8, 8] and len(raw) == ROW_BYTES * shape[0]
    assert len(resp.ciphertexts) == shape[0]


TYPED_FIELD = {
    "BOOL": ("bool_contents", st.booleans()),
    "UINT8": ("uint_contents", st.integers(0, 2**32 - 1) | st.integers(0, 255)),
    "UINT16": ("uint_contents", st.integers(0, 2**32 - 1)),
    "UINT32": ("uint_contents", st.integers(0, 2**32 - 1)),
    "UINT64": ("uint64_contents", st.integers(0, 2**64 - 1)),
    "INT8": ("int_contents", st.integers(-(2**31), 2**31 - 1)),
    "INT16": ("int_contents", st.integers(-(2**31), 2**31 - 1)),
    "INT32": ("int_contents", st.integers(-(2**31), 2**31 - 1)),
    "INT64": ("int64_contents", st.integers(-(2**63), 2**63 - 1)),
    "FP32": ("fp32_contents", st.floats(width=32)),
    "FP64": ("fp64_contents", st.floats()),
}


@GRPC_FUZZ
@given(
    datatype=kserve_names,
    shape=shapes,
    data=st.data(),
    layout=st.sampled_from(["raw", "typed", "both", "two-raw", "none"]),
    input_name=st.sampled_from(["pixels", "pixels", "", "x"]),
    outputs=st.lists(st.sampled_from(["ciphertext", "onehot", "logits", ""]), max_size=3),
    model=st.sampled_from([("encryip", ""), ("encryip", "1"), ("", ""), ("x", "2")]),
)
def test_model_infer_tensors(
    served: tuple[EncryIPServer, grpc.Channel],
    datatype: str,
    shape: list[int],
    data: st.DataObject,
    layout: str,
    input_name: str,
    outputs: list[str],
    model: tuple[str, str],
) -> None:
    _server, channel = served
    req = pb.ModelInferRequest(model_name=model[0], model_version=model[1], id="fuzz")
    for _ in range(data.draw(st.sampled_from([1, 1, 1, 0, 2]))):
        t = req.inputs.add(name=input_name, datatype=datatype)
        t.shape.extend(shape)
        if layout in ("typed", "both") and datatype in TYPED_FIELD:
            field, values = TYPED_FIELD[datatype]
            count = math.prod(shape) if shape and all(d >= 0 for d in shape) else 3
            n = (
                count
                if count <= 4096 and data.draw(st.booleans())
                else data.draw(st.integers(0, 9))
            )
            getattr(t.contents, field).extend(data.draw(st.lists(values, min_size=n, max_size=n)))
    if layout in ("raw", "both", "two-raw"):
        name = KSERVE_DATATYPES.get(datatype)
        itemsize = np.dtype(name).itemsize if name else 1
        req.raw_input_contents.append(data.draw(tensor_bytes(shape, itemsize)))
        if layout == "two-raw":
            req.raw_input_contents.append(b"\0" * ROW_BYTES)
    for name in outputs:
        req.outputs.add(name=name)
    try:
        resp = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=10)
    except grpc.RpcError as exc:
        check_refusal(exc)
        return
    assert datatype == "UINT8" and shape[1:] == [1, 8, 8]
    assert resp.outputs[0].name == "ciphertext" and list(resp.outputs[0].shape) == [shape[0]]


# -- encryip predict: .npy and image inputs ------------------------------------------------


@pytest.fixture(scope="module")
def endpoint(secure_release: Any) -> Iterator[str]:
    with running_server(secure_release.licensee_dir("acme"), max_queue_delay_ms=0.5) as server:
        yield f"127.0.0.1:{server.port}"


def _valid_png(shape: tuple[int, int], mode: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    px = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
    img = Image.fromarray(px[..., 0] if channels == 1 else px, mode)
    buf = io.BytesIO()
    img.save(buf, format=("PNG", "BMP", "GIF")[shape[0] % 3])
    return buf.getvalue()


def _valid_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["keep", "truncate", "flip", "splice"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original)))]
    raw = bytearray(original)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    elif kind == "splice":
        pos = draw(st.integers(0, len(raw)))
        raw[pos:pos] = draw(st.binary(min_size=1, max_size=30))
    return bytes(raw)


def _filled(dtype: str, shape: tuple[int, ...], fill: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.full(shape, fill).astype(dtype)


npy_arrays = st.builds(
    _filled,
    st.sampled_from(["uint8", "float32", "int64", "bool", ">i2", "complex64", "float16", "<U3"]),
    st.lists(st.integers(0, 9), max_size=5).map(tuple)
    | st.sampled_from([(1, 8, 8), (2, 1, 8, 8), (0, 1, 8, 8), (), (3, 1, 8, 8, 1)]),
    st.sampled_from([0, 1, 255, 256, -1, 0.5, float("nan")]),
)


def _run_predict(endpoint: str, key: Path, files: list[Path], capsys: Any) -> None:
    code = main(["predict", "--endpoint", endpoint, "--key", str(key), "--input", *map(str, files)])
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    if code != 0:
        assert err.startswith("encryip predict: error: "), err


@settings(GRPC_FUZZ, max_examples=80)
@given(data=st.data())
def test_predict_cli_npy(
    endpoint: str, secure_release: Any, tmp_path_factory: Any, capsys: Any, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("npy", numbered=True)
    arr = data.draw(npy_arrays)
    raw = data.draw(mutated(_valid_npy(arr)) if arr.dtype.kind != "U" else st.just(_valid_npy(arr)))
    path = d / "x.npy"
    path.write_bytes(raw)
    _run_predict(endpoint, secure_release.key("acme"), [path], capsys)


@settings(GRPC_FUZZ, max_examples=80)
@given(data=st.data())
def test_predict_cli_images(
    endpoint: str, secure_release: Any, tmp_path_factory: Any, capsys: Any, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("img", numbered=True)
    shape = data.draw(st.sampled_from([(8, 8), (3, 5), (16, 9), (1, 1)]))
    mode = data.draw(st.sampled_from(["L", "RGB", "RGBA"]))
    raw = data.draw(mutated(_valid_png(shape, mode)) | st.binary(max_size=200))
    path = d / data.draw(st.sampled_from(["x.png", "x.jpg", "x", "x.NPY"]))
    path.write_bytes(raw)
    _run_predict(endpoint, secure_release.key("acme"), [path], capsys)


# Found by test_predict_cli_images: an IDAT chunk followed by a corrupt chunk header makes
# PIL raise SyntaxError("broken PNG file ...") while decoding, not OSError.
BROKEN_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000008000000080800000000e164e1570000000c49444154"
    "789c63609ec6d4a00e0000004800012eb83c7e0000000049454e44ae426082"
)


def test_predict_cli_broken_png_is_an_input_error(
    endpoint: str, secure_release: Any, tmp_path: Path, capsys: Any
) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(BROKEN_PNG)
    code = main(
        [
            "predict",
            "--endpoint",
            endpoint,
            "--key",
            str(secure_release.key("acme")),
            "--input",
            str(path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "unexpected" not in err and "Traceback" not in err, err
    assert err.startswith("encryip predict: error: "), err
    assert f"'{path}' is not a readable image" in err, err


def test_zero_element_shape_with_huge_dims(served: tuple[EncryIPServer, grpc.Channel]) -> None:
    """Found by test_fuzz_parsers::test_request_tensors: [8, 2**60, 0] holds 0 elements (so 0
    bytes match), but numpy cannot make that shape."""
    _server, channel = served
    shape = [8, 2**60, 0]
    with pytest.raises(grpc.RpcError) as info:
        encryip_pb2_grpc.EncryIPStub(channel).Predict(
            encryip_pb2.PredictRequest(input=encryip_pb2.Tensor(dtype="uint8", shape=shape)),
            timeout=10,
        )
    check_refusal(info.value)
    req = pb.ModelInferRequest(model_name="encryip")
    req.inputs.add(name="pixels", datatype="UINT8", shape=shape)
    req.raw_input_contents.append(b"")
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=10)
    check_refusal(info.value)
