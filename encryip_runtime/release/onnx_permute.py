"""Permute a classifier's outputs inside its ONNX file (per-licensee variants, docs/design.md §4).

The final layer's rows (weights and bias) are permuted in place, so the variant
costs nothing at inference and carries no extra node a reader could spot. Output k
of the result is output ``order[k]`` of the input model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import ModelError

__all__ = ["permute_onnx_outputs"]

log = logging.getLogger(__name__)


def _load(model_bytes: bytes) -> Any:
    import onnx

    try:
        return onnx.load_from_string(model_bytes)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"not a valid ONNX model: {exc}") from None


def permute_onnx_outputs(model_bytes: bytes, order: npt.ArrayLike) -> bytes:
    """Return the model with output k replaced by old output ``order[k]``."""
    import onnx
    from onnx import numpy_helper

    perm = np.asarray(order, dtype=np.int64)
    model = _load(model_bytes)
    graph = model.graph
    if len(graph.output) != 1:
        raise ModelError(f"expected one model output, found {len(graph.output)}")
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1

    def arr(name: str) -> npt.NDArray[Any] | None:
        t = inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def put(name: str, value: npt.NDArray[Any]) -> None:
        if consumers.get(name, 0) > 1:
            raise ModelError(f"initializer {name!r} is shared; cannot permute it in place")
        t = inits[name]
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))

    name = graph.output[0].name
    node = producers.get(name)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    done = False
    if node is not None and node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = arr(node.input[1])
        if w is not None and w.ndim == 2 and w.shape[0 if trans_b else 1] == len(perm):
            put(node.input[1], w[perm] if trans_b else w[:, perm])
            if len(node.input) > 2 and node.input[2]:
                c = arr(node.input[2])
                if c is None:
                    raise ModelError("Gemm bias is not an initializer")
                if c.shape[-1] == len(perm):
                    put(node.input[2], c[..., perm])
            done = True
    elif node is not None and node.op_type == "Add":
        a_node = [producers.get(i) for i in node.input]
        for mm_idx, bias_idx in ((0, 1), (1, 0)):
            mm = a_node[mm_idx]
            bias = arr(node.input[bias_idx])
            if mm is not None and mm.op_type == "MatMul" and bias is not None:
                w = arr(mm.input[1])
                if (
                    w is not None
                    and w.ndim == 2
                    and w.shape[1] == len(perm)
                    and bias.shape[-1] == len(perm)
                ):
                    put(mm.input[1], w[:, perm])
                    put(node.input[bias_idx], bias[..., perm])
                    done = True
                    break
    elif node is not None and node.op_type == "MatMul":
        w = arr(node.input[1])
        if w is not None and w.ndim == 2 and w.shape[1] == len(perm):
            put(node.input[1], w[:, perm])
            done = True
    if not done:
        # Any other head: permute with a Gather after the output. Functionally
        # identical but visible in the graph, so say so.
        log.warning("final layer not recognised; permuting outputs with a Gather node")
        old = name
        inner = old + "__unpermuted"
        for n in graph.node:
            for i, o in enumerate(n.output):
                if o == old:
                    n.output[i] = inner
        idx_name = old + "__order"
        graph.initializer.append(numpy_helper.from_array(perm, idx_name))
        graph.node.append(onnx.helper.make_node("Gather", [inner, idx_name], [old], axis=1))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"permuted model fails the ONNX checker: {exc}") from None
    return bytes(model.SerializeToString())
