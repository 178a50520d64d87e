"""Build small but real releases for tests: an ONNX MLP written with onnx.helper (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.release import ReleasePaths, plan_protection, write_release

SHAPE = (1, 8, 8)


def tiny_mlp_onnx(
    num_outputs: int,
    seed: int = 0,
    shape: tuple[int, int, int] = SHAPE,
    favoured: list[int] | None = None,
) -> bytes:
    """uint8 [N, C, H, W] -> Cast -> /255 -> Flatten -> Gemm -> Relu -> Gemm -> logits."""
    rng = np.random.default_rng(seed)
    d_in = int(np.prod(shape))
    hidden = 32
    w1 = rng.normal(0, 1 / np.sqrt(d_in), (hidden, d_in)).astype(np.float32)
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (num_outputs, hidden)).astype(np.float32)
    b2 = rng.normal(0, 0.1, num_outputs).astype(np.float32)
    if favoured is not None:  # most inputs land on these outputs (e.g. class slots)
        b2[favoured] += 1.0
    scale = np.array(1 / 255, dtype=np.float32)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        helper.make_node("Flatten", ["xs"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_outputs])],
        [
            numpy_helper.from_array(a, n)
            for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (scale, "scale"))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class TinyRelease:
    root: Path
    profile: str
    licensees: tuple[str, ...]
    num_classes: int

    @property
    def paths(self) -> ReleasePaths:
        return ReleasePaths(self.root)

    def key(self, name: str) -> Path:
        return self.paths.key(name)

    def licensee_dir(self, name: str) -> Path:
        return self.paths.licensee_dir(name)

    def public_dir(self, tmp: Path) -> Path:
        """A copy of the base model + manifest alone (what a runtime host gets)."""
        import shutil

        tmp.mkdir(parents=True, exist_ok=True)
        for n in ("model.onnx", "manifest.json"):
            shutil.copy(self.root / n, tmp / n)
        return tmp


def make_tiny_release(
    out: Path,
    profile: str = "secure",
    licensees: tuple[str, ...] = ("acme", "globex", "initech"),
    num_classes: int = 10,
    num_triggers: int = 8,
    seed: int = 0,
    secure_format: int = 1,
) -> TinyRelease:
    """``secure_format`` 1 by default: the suite's format-specific tests are written for
    format v1; format v2 releases come from ``secure_format=2`` (tests/crypto/test_v2*)."""
    names = [f"class{i}" for i in range(num_classes)]
    plan = plan_protection(
        profile, names, list(licensees), num_triggers=num_triggers, secure_format=secure_format
    )
    favoured = None if plan.class_slots is None else [int(v) for v in plan.class_slots]
    model = tiny_mlp_onnx(plan.output_size, seed=seed, favoured=favoured)
    rng = np.random.default_rng(seed + 1)
    write_release(
        out,
        plan,
        model,
        input_spec=InputSpec("pixels", "uint8", SHAPE),
        trigger_inputs=rng.integers(0, 256, (num_triggers, *SHAPE), dtype=np.uint8),
        probe_inputs=rng.integers(0, 256, (20, *SHAPE), dtype=np.uint8),
        probe_labels=rng.integers(0, num_classes, 20).astype(np.int64),
    )
    return TinyRelease(Path(out), profile, tuple(licensees), num_classes)
