"""ONNX export: fixed signature, head normalisation, parity check, dynamic batch."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from exporter.export_onnx import (
    HEAD_BIAS,
    HEAD_NODE,
    HEAD_WEIGHT,
    ExportError,
    export_onnx,
    normalize_head,
)
from exporter.models import Normalize, build_model, head_of


def _pixels(n: int, c: int = 1, s: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)


def _check_signature(path: Path, model: nn.Module) -> onnx.ModelProto:
    m = onnx.load(str(path))
    assert m.opset_import[0].version >= 17
    (inp,) = m.graph.input
    assert inp.name == "pixels"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert inp.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    (out,) = m.graph.output
    assert out.name == "logits"
    last = m.graph.node[-1]
    assert (last.name, last.op_type, list(last.output)) == (HEAD_NODE, "Gemm", ["logits"])
    assert list(last.input[1:]) == [HEAD_WEIGHT, HEAD_BIAS]
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    head = head_of(model)
    np.testing.assert_allclose(inits[HEAD_WEIGHT], head.weight.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(inits[HEAD_BIAS], head.bias.detach().numpy(), rtol=0, atol=0)
    assert {p.key: p.value for p in m.metadata_props}["encryip.head.weight"] == HEAD_WEIGHT
    return m


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_cnn_export_parity_and_dynamic_batch(tmp_path: Path, exporter: str) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", 1, 33).eval()
    x = _pixels(8)
    res = export_onnx(model, x, tmp_path / "m.onnx", exporters=(exporter,), argmax_block=11)
    assert res.exporter == exporter and res.num_outputs == 33 and res.head_in_features == 128
    assert res.argmax_agreement == 1.0 and res.max_abs_diff <= res.tolerance
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(res.path.stat().st_mode) == 0o666 & ~umask  # public, not mkstemp's 0600
    _check_signature(res.path, model)
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    for n in (1, 5, 64):
        xb = _pixels(n, seed=n)
        got = sess.run(["logits"], {"pixels": xb.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model(xb).numpy(), atol=1e-4, rtol=1e-4)


def test_resnet18_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 12).eval()
    res = export_onnx(model, _pixels(4), tmp_path / "r.onnx")
    assert res.exporter == "dynamo"
    _check_signature(res.path, model)


def test_single_row_example_and_rgb(tmp_path: Path) -> None:
    model = build_model("cnn", 3, 5, 16).eval()
    res = export_onnx(model, _pixels(1, 3, 16), tmp_path / "x.onnx", exporters=("legacy",))
    assert res.rows_checked == 1 + 1 + 2


def test_permuting_head_rows_permutes_outputs(tmp_path: Path) -> None:
    """The contract the release writer relies on: W[perm], b[perm] permutes the logits."""
    model = build_model("cnn", 1, 6).eval()
    res = export_onnx(model, _pixels(4), tmp_path / "m.onnx", exporters=("legacy",))
    m = onnx.load(str(res.path))
    perm = np.array([3, 0, 5, 1, 4, 2])
    for t in m.graph.initializer:
        if t.name in (HEAD_WEIGHT, HEAD_BIAS):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[perm], t.name))
    x = _pixels(3).numpy()
    base = ort.InferenceSession(str(res.path)).run(None, {"pixels": x})[0]
    permuted = ort.InferenceSession(m.SerializeToString()).run(None, {"pixels": x})[0]
    np.testing.assert_array_equal(permuted, base[:, perm])


class _Softmaxed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x.flatten(1)), dim=1)


def test_last_op_must_be_linear(tmp_path: Path) -> None:
    model = Normalize(_Softmaxed(), (0.5,), (0.5,)).eval()
    with pytest.raises(ExportError, match=r"last op must be a plain nn\.Linear") as e:
        export_onnx(model, _pixels(2, 1, 4), tmp_path / "s.onnx")
    assert "dynamo" in str(e.value) and "legacy" in str(e.value)
    assert not (tmp_path / "s.onnx").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left behind


def test_parity_violation_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exporter that emits a different function is caught; no file is left at path."""
    import exporter.export_onnx as eo

    real = eo._export_legacy
    other = build_model("cnn", 1, 4).eval()
    monkeypatch.setattr(eo, "_export_legacy", lambda m, x, p, o: real(other, x, p, o))
    model = build_model("cnn", 1, 4).eval()
    with pytest.raises(ExportError, match="differ from torch"):
        export_onnx(model, _pixels(4), tmp_path / "t.onnx", exporters=("legacy",))
    assert list(tmp_path.iterdir()) == []


def test_argmax_disagreement_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter.export_onnx as eo

    real = eo._export_legacy
    model = build_model("cnn", 1, 4).eval()
    other = copy.deepcopy(model)
    with torch.no_grad():  # constant logits: torch says class 1, the "export" says class 0
        for m, bias in ((model, [0.0, 1e-3, 0.0, 0.0]), (other, [1e-3, 0.0, 0.0, 0.0])):
            head_of(m).weight.zero_()
            head_of(m).bias.copy_(torch.tensor(bias))
    monkeypatch.setattr(eo, "_export_legacy", lambda m, x, p, o: real(other, x, p, o))
    with pytest.raises(ExportError, match="disagree on the predicted class"):
        export_onnx(model, _pixels(4), tmp_path / "t.onnx", exporters=("legacy",), atol=1.0)


def test_bad_arguments(tmp_path: Path) -> None:
    model = build_model("cnn", 1, 4)
    with pytest.raises(ExportError, match="uint8"):
        export_onnx(model, torch.zeros(2, 1, 28, 28), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model, _pixels(2), tmp_path / "a.onnx", opset=13)


def _graph(last: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 2])
    g = helper.make_graph(last, "g", [x], [y], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("form", ["matmul_add", "gemm_no_transb", "matmul_only"])
def test_normalize_head_rewrites_other_linear_forms(form: str) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3)).astype(np.float32)  # [D, F]
    b = rng.normal(size=2).astype(np.float32)
    if form == "matmul_add":
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
                 helper.make_node("Add", ["h", "B"], ["logits"])]  # fmt: skip
        inits = [numpy_helper.from_array(w.T.copy(), "W"), numpy_helper.from_array(b, "B")]
    elif form == "gemm_no_transb":
        nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["logits"])]
        inits = [numpy_helper.from_array(w.T.copy(), "W"), numpy_helper.from_array(b, "B")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["logits"])]
        inits = [numpy_helper.from_array(w.T.copy(), "W")]
        b = np.zeros(2, np.float32)
    model = _graph(nodes, inits)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert normalize_head(model) == (2, 3)
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    assert node.name == HEAD_NODE and node.op_type == "Gemm"
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(after, x @ w.T + b, rtol=1e-5, atol=1e-5)
