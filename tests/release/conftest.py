"""Releases whose base model picks a known output slot, so tests control every slot.

The random-weight MLP of ``tiny_release`` sends most inputs to two or three slots,
which may all be trigger slots. The *selector* model here is
``Cast -> /255 -> Flatten -> Gemm`` with an identity-like weight: output slot ``s``
is pixel ``s``, so an image whose brightest pixel is ``s`` lands on slot ``s``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny_release import TinyRelease

from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.release import plan_protection, write_release

SHAPE = (1, 8, 8)
LICENSEES = ("acme", "globex", "initech")


def selector_onnx(num_outputs: int) -> bytes:
    d_in = int(np.prod(SHAPE))
    assert num_outputs <= d_in
    w = np.zeros((num_outputs, d_in), dtype=np.float32)
    w[np.arange(num_outputs), np.arange(num_outputs)] = 1.0
    b = np.linspace(0, 1e-3, num_outputs, dtype=np.float32)  # no exact ties
    nodes = [
        helper.make_node("Cast", ["pixels"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        helper.make_node("Flatten", ["xs"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "selector",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_outputs])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def images_for_slots(slots: npt.ArrayLike, seed: int = 0) -> npt.NDArray[np.uint8]:
    """One image per slot: dim random background, pixel ``slot`` at full brightness."""
    s = np.asarray(slots, dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 100, (len(s), int(np.prod(SHAPE))), dtype=np.uint8)
    x[np.arange(len(s)), s] = 255
    return x.reshape(len(s), *SHAPE)


def make_selector_release(
    out: Path, profile: str, num_classes: int = 10, secure_format: int = 2
) -> TinyRelease:
    plan = plan_protection(
        profile,
        [f"class{i}" for i in range(num_classes)],
        list(LICENSEES),
        num_triggers=8,
        secure_format=secure_format,
    )
    rng = np.random.default_rng(1)
    write_release(
        out,
        plan,
        selector_onnx(plan.output_size),
        input_spec=InputSpec("pixels", "uint8", SHAPE),
        trigger_inputs=rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8),
        probe_inputs=rng.integers(0, 256, (20, *SHAPE), dtype=np.uint8),
        probe_labels=rng.integers(0, num_classes, 20).astype(np.int64),
    )
    return TinyRelease(out, profile, LICENSEES, num_classes)


@pytest.fixture(scope="session", params=["paper", "secure"])
def selector_release(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> TinyRelease:
    """Read-only selector release per profile."""
    return make_selector_release(tmp_path_factory.mktemp(f"sel-{request.param}"), request.param)
