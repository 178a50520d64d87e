"""A leaker's re-permutation of its model file (what anyone who reads docs/internals.md can do).

* **Outputs** (``hidden=False``): reorder the final layer's rows and the manifest's
  codebook (secure) or output order (paper) together. The served function, and so
  every decrypted label, is unchanged; the output order the owner issued (the
  per-licensee slot fingerprint) is gone.
* **Hidden units** (``hidden=True``): also reorder the hidden units (channels) of
  every pair of consecutive weighted layers (Conv / Gemm, through Relu, pooling and
  Flatten) consistently: again the same function, but inner weights no longer sit
  where the owner put them (what a weight fingerprint has to undo).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import ModelError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.release.onnx_permute import permute_onnx_outputs
from encryip_runtime.release.writer import licensee_permutation, variant_manifest

__all__ = ["permute_hidden_units", "repermute_variant"]


def repermute_variant(
    model_bytes: bytes, manifest: Manifest, *, hidden: bool = False
) -> tuple[bytes, Manifest, npt.NDArray[np.int64]]:
    """(new model, its manifest, the order used: new output k = old output order[k])."""
    # paper: within the three blocks; secure: any order of the slots
    order = licensee_permutation(manifest.scheme, manifest.output_size)
    model = permute_onnx_outputs(model_bytes, order)
    if hidden:
        model = permute_hidden_units(model)
    name = manifest.licensee or "re-permuted"
    new = variant_manifest(manifest, name, order, hashlib.sha256(model).hexdigest())
    return model, new, order


_PASS_THROUGH = {"Relu", "LeakyRelu", "MaxPool", "AveragePool", "Identity", "Flatten"}


def permute_hidden_units(model_bytes: bytes, seed: int | None = None) -> bytes:
    """Reorder the hidden units (channels) between every pair of weighted layers
    ``A -> [Relu | MaxPool | Flatten ...] -> B`` (A, B: Conv or Gemm with transB=1):
    A's output channels (weight rows, bias) and B's matching input columns (in blocks
    of H*W after a Flatten). The model computes the same function.

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

    def weighted(n: Any) -> bool:
        if n.op_type == "Conv":
            return True
        return (
            n.op_type == "Gemm" and next((a.i for a in n.attribute if a.name == "transB"), 0) == 1
        )

    def next_weighted(n: Any) -> Any | None:
        out = n.output[0]
        while True:
            nxt = consumers.get(out, [])
            if len(nxt) != 1:
                return None
            m = nxt[0]
            if weighted(m) and m.input[0] == out:
                return m
            if m.op_type not in _PASS_THROUGH:
                return None
            out = m.output[0]

    done = 0
    for a in list(g.node):
        if not weighted(a):
            continue
        b = next_weighted(a)
        if b is None:
            continue
        wa, wb = arr(a.input[1]), arr(b.input[1])
        if wa is None or wb is None or wb.shape[1] % wa.shape[0]:
            continue
        perm = rng.permutation(wa.shape[0])
        block = wb.shape[1] // wa.shape[0]
        cols = (perm[:, None] * block + np.arange(block)[None, :]).reshape(-1)
        put(a.input[1], wa[perm])
        if len(a.input) > 2 and a.input[2]:
            ba = arr(a.input[2])
            if ba is not None and ba.shape[-1] == len(perm):
                put(a.input[2], ba[..., perm])
        put(b.input[1], wb[:, cols])
        done += 1
    if not done:
        raise ModelError("no pair of weighted layers: no hidden units to permute")
    return bytes(model.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    """``python -m encryip_runtime.attacks.repermute LICENSEE_DIR OUT_DIR [--hidden]``."""
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(
        prog="python -m encryip_runtime.attacks.repermute",
        description="Re-permute a licensee's model + manifest consistently (same labels).",
    )
    p.add_argument("src", type=Path, help="directory with model.onnx and manifest.json")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--hidden", action="store_true", help="also permute hidden units")
    args = p.parse_args(argv)
    model, manifest, _ = repermute_variant(
        (args.src / "model.onnx").read_bytes(),
        Manifest.load(args.src / "manifest.json"),
        hidden=args.hidden,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(model)
    manifest.save(args.out / "manifest.json")
    print(f"wrote {args.out}/model.onnx and manifest.json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
