"""A leaker's re-permutation of its model file (what anyone who reads docs/internals.md can do).

* **Outputs** (``hidden=False``): reorder the final layer's rows and the manifest's
  codebook (secure) or output order (paper) together. The served function, and so
  every decrypted label, is unchanged; the output order the owner issued (the
  per-licensee slot fingerprint) is gone.
* **Hidden units** (``hidden=True``): also reorder the hidden units of every
  ``Gemm -> Relu -> Gemm`` pair consistently (rows of the first layer, columns of the
  second): again the same function, but inner weights no longer sit where the owner
  put them (what a weight fingerprint has to undo).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import ModelError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.release.onnx_permute import permute_onnx_outputs
from encryip_runtime.release.plan import random_permutation
from encryip_runtime.release.writer import licensee_permutation, variant_manifest

__all__ = ["permute_hidden_units", "repermute_variant"]


def repermute_variant(
    model_bytes: bytes, manifest: Manifest, *, hidden: bool = False
) -> tuple[bytes, Manifest, npt.NDArray[np.int64]]:
    """(new model, its manifest, the order used: new output k = old output order[k])."""
    if manifest.profile == "paper":
        order = licensee_permutation(manifest.scheme, manifest.output_size)  # within blocks
    else:
        order = random_permutation(manifest.output_size)
    model = permute_onnx_outputs(model_bytes, order)
    if hidden:
        model = permute_hidden_units(model)
    name = manifest.licensee or "re-permuted"
    new = variant_manifest(manifest, name, order, hashlib.sha256(model).hexdigest())
    return model, new, order


def permute_hidden_units(model_bytes: bytes, seed: int | None = None) -> bytes:
    """Reorder the hidden units between every ``Gemm(transB=1) -> Relu -> Gemm(transB=1)``.

    Raises ``ModelError`` when the graph has no such pair (nothing to permute).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    rng = np.random.default_rng(seed)

    def arr(name: str) -> npt.NDArray[Any] | None:
        t = inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def put(name: str, value: npt.NDArray[Any]) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))

    def trans_b(n: Any) -> int:
        return next((a.i for a in n.attribute if a.name == "transB"), 0)

    done = 0
    for first in list(g.node):
        if first.op_type != "Gemm" or trans_b(first) != 1:
            continue
        nxt = consumers.get(first.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Relu":
            continue
        after = consumers.get(nxt[0].output[0], [])
        if len(after) != 1 or after[0].op_type != "Gemm" or trans_b(after[0]) != 1:
            continue
        w1, w2 = arr(first.input[1]), arr(after[0].input[1])
        if w1 is None or w2 is None or w1.shape[0] != w2.shape[1]:
            continue
        perm = rng.permutation(w1.shape[0])
        put(first.input[1], w1[perm])
        if len(first.input) > 2 and first.input[2]:
            b1 = arr(first.input[2])
            if b1 is not None and b1.shape[-1] == len(perm):
                put(first.input[2], b1[..., perm])
        put(after[0].input[1], w2[:, perm])
        done += 1
    if not done:
        raise ModelError("no Gemm -> Relu -> Gemm pair: no hidden units to permute")
    return bytes(model.SerializeToString())
