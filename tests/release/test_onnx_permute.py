"""permute_onnx_outputs on the heads exporters produce (Gemm, MatMul+Add, MatMul) and others."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from encryip_runtime.exceptions import ModelError
from encryip_runtime.release import permute_onnx_outputs

D_IN, D_OUT = 6, 9


def _model(head: str) -> bytes:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(D_IN, D_OUT)).astype(np.float32)  # (in, out)
    b = rng.normal(size=D_OUT).astype(np.float32)
    inits = [numpy_helper.from_array(b, "b")]
    if head == "gemm-transB":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1)]
    elif head == "gemm":
        inits.append(numpy_helper.from_array(w, "w"))
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"], alpha=0.5, beta=2.0)]
    elif head == "gemm-identity":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
        nodes = [
            helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1),
            helper.make_node("Identity", ["z"], ["logits"]),
        ]
    elif head in ("matmul-add", "add-matmul"):
        inits.append(numpy_helper.from_array(w, "w"))
        add_in = ["mm", "b"] if head == "matmul-add" else ["b", "mm"]
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Add", add_in, ["logits"]),
        ]
    elif head == "matmul":
        inits = [numpy_helper.from_array(w, "w")]
        nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"])]
    elif head == "other":  # a head the permuter does not recognise: Gemm then Relu
        inits.append(numpy_helper.from_array(w, "w"))
        nodes = [
            helper.make_node("Gemm", ["x", "w", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["logits"]),
        ]
    elif head == "shared":  # the head's bias initializer also feeds the layer before
        w2 = rng.normal(size=(D_OUT, D_OUT)).astype(np.float32)
        inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")]
        nodes = [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "w2", "b"], ["logits"]),
        ]
    else:  # pragma: no cover
        raise AssertionError(head)
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", D_OUT])]
    graph = helper.make_graph(
        nodes,
        head,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D_IN])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["logits"], {"x": x})[0])


def _ops(model: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(model).graph.node]


X = np.random.default_rng(1).normal(size=(16, D_IN)).astype(np.float32)
ORDER = np.random.default_rng(2).permutation(D_OUT)


@pytest.mark.parametrize(
    "head", ["gemm-transB", "gemm", "gemm-identity", "matmul-add", "add-matmul", "matmul"]
)
def test_recognised_heads_are_permuted_in_place(head: str) -> None:
    base = _model(head)
    out = permute_onnx_outputs(base, ORDER)
    np.testing.assert_allclose(_run(out, X), _run(base, X)[:, ORDER], rtol=1e-6, atol=1e-6)
    assert _ops(out) == _ops(base)  # no extra node a reader could spot
    assert out != base
    # deterministic: the same order gives the same bytes (rotation relies on it)
    assert permute_onnx_outputs(base, ORDER) == out
    # and the inverse order restores the original function
    inv = np.argsort(ORDER)
    np.testing.assert_allclose(
        _run(permute_onnx_outputs(out, inv), X), _run(base, X), rtol=1e-6, atol=1e-6
    )


def test_tiny_mlp_head(tmp_path: Any) -> None:
    from tiny_release import tiny_mlp_onnx

    base = tiny_mlp_onnx(12, seed=4)
    order = np.random.default_rng(3).permutation(12)
    out = permute_onnx_outputs(base, order)
    x = np.random.default_rng(5).integers(0, 256, (8, 1, 8, 8), dtype=np.uint8)

    def run(m: bytes) -> np.ndarray:
        sess = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(["logits"], {"pixels": x})[0])

    np.testing.assert_allclose(run(out), run(base)[:, order], rtol=1e-6, atol=1e-6)
    assert _ops(out) == _ops(base)


def test_unrecognised_head_falls_back_to_gather(caplog: pytest.LogCaptureFixture) -> None:
    base = _model("other")
    with caplog.at_level(logging.WARNING, logger="encryip_runtime.release.onnx_permute"):
        out = permute_onnx_outputs(base, ORDER)
    assert "Gather" in caplog.text
    assert _ops(out) == [*_ops(base), "Gather"]
    np.testing.assert_allclose(_run(out, X), _run(base, X)[:, ORDER], rtol=1e-6, atol=1e-6)


def test_shared_initializer_is_refused() -> None:
    with pytest.raises(ModelError, match="shared"):
        permute_onnx_outputs(_model("shared"), ORDER)


def test_not_onnx_is_refused() -> None:
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        permute_onnx_outputs(b"\x08\x07garbage-not-a-model" * 3, ORDER)
