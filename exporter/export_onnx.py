"""Export a classifier to ONNX with a fixed signature, then check it against torch.

Signature of every exported graph (fixed; no option changes it):

* input ``pixels``: ``uint8 [batch, C, H, W]`` with a dynamic ``batch`` dimension;
  normalisation is inside the graph (``models.Normalize``);
* output ``logits``: ``float32 [batch, D]``;
* the final layer is **one** ``Gemm`` node named ``head`` (attributes ``transA=0``,
  ``transB=1``, ``alpha=beta=1``) whose output is the graph output ``logits``, with two
  initializers used by no other node:

  - ``head.weight``: ``float32 [D, F]`` (one row per output position),
  - ``head.bias``: ``float32 [D]``.

  Permuting output positions by ``perm`` (new position ``i`` shows old position
  ``perm[i]``) is ``W' = W[perm]``, ``b' = b[perm]`` on those two initializers; nothing
  else in the graph changes. The model's ``metadata_props`` repeat the names
  (``encryip.head.node``, ``encryip.head.weight``, ``encryip.head.bias``).

Whatever the exporter emitted for the last ``nn.Linear`` (``Gemm`` with either
``transB``, or ``MatMul`` + ``Add``) is rewritten into that form; a model whose last op
is not a linear layer is refused.

The exporter is torch's dynamo-based ``torch.onnx.export(..., dynamo=True)`` (needs
``onnxscript``); if it fails, or its graph fails the parity check, the legacy
TorchScript exporter is tried. Parity: on the example batch (and on batch sizes 1 and
``B + 1``, which checks the dynamic dimension) onnxruntime's logits must match torch's
within ``atol + rtol·max|logits|`` and agree on the argmax of every row (of every
``argmax_block``-wide block for the paper profile's three one-hot blocks). A violation
raises :class:`ExportError` and leaves no file at ``path``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from encryip_runtime.exceptions import EncryIPError

__all__ = [
    "HEAD_BIAS",
    "HEAD_NODE",
    "HEAD_WEIGHT",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportError",
    "ExportResult",
    "export_onnx",
    "normalize_head",
]

log = logging.getLogger(__name__)

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
HEAD_NODE = "head"
HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"
DEFAULT_OPSET = 18


class ExportError(EncryIPError):
    """The model cannot be exported in the fixed signature, or fails the parity check."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "legacy"
    opset: int
    num_outputs: int  # D
    head_in_features: int  # F
    max_abs_diff: float
    tolerance: float
    argmax_agreement: float  # fraction of rows (1.0 = all)
    rows_checked: int


# ----------------------------------------------------------------------------- graph surgery


def _attr(node: onnx.NodeProto, name: str, default: float | int) -> float | int:
    for a in node.attribute:
        if a.name == name:
            value: float | int = helper.get_attribute_value(a)
            return value
    return default


def normalize_head(model: onnx.ModelProto) -> tuple[int, int]:
    """Rewrite the layer producing ``logits`` into the ``head`` Gemm form (in place).

    Returns ``(D, F)``. Raises :class:`ExportError` when the last op is not a linear layer
    with constant weight and bias.
    """
    g = model.graph
    if [o.name for o in g.output] != [OUTPUT_NAME]:
        raise ExportError(f"graph outputs are {[o.name for o in g.output]}, expected ['logits']")
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    last = producers.get(OUTPUT_NAME)
    if last is None:
        raise ExportError("no node produces 'logits'")

    def const(name: str) -> np.ndarray:
        if name not in inits:
            raise ExportError(
                f"final layer input {name!r} is not a constant initializer "
                "(the model's last op must be a plain nn.Linear)"
            )
        if users.get(name, 0) != 1:
            raise ExportError(f"initializer {name!r} of the final layer is shared with other nodes")
        return numpy_helper.to_array(inits[name])

    removed: list[onnx.NodeProto] = [last]
    if last.op_type == "Gemm":
        if _attr(last, "transA", 0) != 0 or _attr(last, "alpha", 1.0) != 1.0:
            raise ExportError("final Gemm has transA or alpha set; cannot normalise it")
        x = last.input[0]
        w = const(last.input[1])
        if w.ndim != 2:
            raise ExportError(f"final Gemm weight has shape {w.shape}, expected 2-D")
        if not _attr(last, "transB", 0):
            w = w.T
        if len(last.input) > 2 and last.input[2]:
            b = const(last.input[2]).reshape(-1) * float(_attr(last, "beta", 1.0))
        else:
            b = np.zeros(w.shape[0], dtype=w.dtype)
        old_inits = [n for n in last.input[1:] if n]
    elif last.op_type == "Add":
        a, c = last.input
        mm_out, bias_name = (a, c) if c in inits else (c, a)
        mm = producers.get(mm_out)
        if mm is None or mm.op_type != "MatMul" or users.get(mm_out, 0) != 1:
            raise ExportError(
                "the last op is an Add not fed by a MatMul: the model's last op must be "
                "a plain nn.Linear"
            )
        x = mm.input[0]
        w = const(mm.input[1]).T
        b = const(bias_name).reshape(-1)
        removed.append(mm)
        old_inits = [mm.input[1], bias_name]
    elif last.op_type == "MatMul":
        x = last.input[0]
        w = const(last.input[1]).T
        b = np.zeros(w.shape[0], dtype=w.dtype)
        old_inits = [last.input[1]]
    else:
        raise ExportError(
            f"the last op is {last.op_type!r}: the model's last op must be a plain nn.Linear "
            "(Gemm or MatMul + Add in ONNX)"
        )
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ExportError(f"final layer weight {w.shape} / bias {b.shape} do not fit together")
    d, f = w.shape
    # Replace the nodes and initializers, keeping topological order (head is last here).
    keep = [n for n in g.node if all(n is not r for r in removed)]
    del g.node[:]
    g.node.extend(keep)
    g.node.append(
        helper.make_node(
            "Gemm", [x, HEAD_WEIGHT, HEAD_BIAS], [OUTPUT_NAME], name=HEAD_NODE, transB=1
        )
    )
    kept_inits = [t for t in g.initializer if t.name not in old_inits]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    g.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(w, dtype=np.float32), HEAD_WEIGHT),
            numpy_helper.from_array(np.ascontiguousarray(b, dtype=np.float32), HEAD_BIAS),
        ]
    )
    # Drop stale graph inputs/value_info for removed initializers (legacy exporter style).
    for coll in (g.input, g.value_info):
        stale = [v for v in coll if v.name in old_inits]
        for v in stale:
            coll.remove(v)
    meta = {p.key: p for p in model.metadata_props}
    for k, v in (
        ("encryip.head.node", HEAD_NODE),
        ("encryip.head.weight", HEAD_WEIGHT),
        ("encryip.head.bias", HEAD_BIAS),
    ):
        if k in meta:
            meta[k].value = v
        else:
            model.metadata_props.add(key=k, value=v)
    return d, f


# ----------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """onnxscript/onnx_ir log every optimisation pass at INFO; keep them at WARNING."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), _quiet_loggers():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
        assert prog is not None
        prog.save(str(path), external_data=False)
    if buf.getvalue().strip():
        log.debug("torch.onnx (dynamo): %s", buf.getvalue().strip())


def _export_legacy(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def _parity(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    atol: float,
    rtol: float,
    argmax_block: int | None,
) -> tuple[float, float, float, int]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    batches = [example, example[:1], torch.cat([example, example[:1]])]  # dynamic batch
    worst, tol, agree, rows = 0.0, atol, 0, 0
    for i, xb in enumerate(batches):
        with torch.no_grad():
            ref = model(xb).float().numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: xb.numpy()})[0]
        if got.shape != ref.shape or got.dtype != np.float32:
            raise ExportError(
                f"ONNX output is {got.dtype} {got.shape} for a batch of {xb.shape[0]}, "
                f"torch gives float32 {ref.shape}"
            )
        if i == 0 and ref.size:  # one tolerance, from the example batch's logit scale
            tol = atol + rtol * float(np.max(np.abs(ref)))
        worst = max(worst, float(np.max(np.abs(got - ref))) if ref.size else 0.0)
        w = argmax_block or ref.shape[1]
        if ref.shape[1] % w:
            raise ExportError(f"argmax_block {w} does not divide the {ref.shape[1]} outputs")
        rb = ref.reshape(ref.shape[0], -1, w).argmax(-1)
        gb = got.reshape(got.shape[0], -1, w).argmax(-1)
        agree += int((rb == gb).all(axis=1).sum())
        rows += ref.shape[0]
    if not worst <= tol:  # also catches NaN
        raise ExportError(
            f"{path}: ONNX logits differ from torch by {worst:.3g} > tolerance {tol:.3g}"
        )
    if agree != rows:
        raise ExportError(
            f"{path}: ONNX and torch disagree on the predicted class for {rows - agree} of "
            f"{rows} rows (max abs diff {worst:.3g})"
        )
    return worst, tol, agree / rows, rows


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    argmax_block: int | None = None,
    exporters: tuple[str, ...] = ("dynamo", "legacy"),
) -> ExportResult:
    """Export ``model`` (uint8 ``[B, C, H, W]`` in, logits out) to ``path`` in the fixed
    signature of the module docstring, and check parity with onnxruntime.

    ``example``: a uint8 batch of real inputs (``B >= 2`` is best; a batch of 1 is
    doubled for tracing). The ONNX file is written atomically, only after the check passes.
    ``argmax_block``: check the argmax per block of this width (``p`` for the paper
    profile's ``3p`` logits); ``None`` checks the argmax over the whole row.

    Head location for per-licensee permutation: Gemm node ``head`` → initializers
    ``head.weight`` ``[D, F]`` and ``head.bias`` ``[D]`` (rows = output positions).
    """
    if opset < 17:
        raise ExportError(f"opset must be >= 17, got {opset}")
    if example.dtype != torch.uint8 or example.ndim != 4 or example.shape[0] < 1:
        raise ExportError(
            f"example must be uint8 [B, C, H, W] raw pixels, got {example.dtype} "
            f"{tuple(example.shape)}"
        )
    unknown = set(exporters) - {"dynamo", "legacy"}
    if unknown or not exporters:
        raise ExportError(f"exporters must be from ('dynamo', 'legacy'), got {exporters}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # fp32, NCHW, eval: whatever the training used (bf16 autocast, channels_last on CUDA)
    net = copy.deepcopy(_unwrap(model)).cpu().float().eval()
    net = net.to(memory_format=torch.contiguous_format)
    example = example.cpu().contiguous()
    trace_example = example if example.shape[0] >= 2 else torch.cat([example, example])

    errors: list[str] = []
    for name in exporters:
        fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                (_export_dynamo if name == "dynamo" else _export_legacy)(
                    net, trace_example, tmp, opset
                )
                proto = onnx.load(str(tmp))
                d, f = normalize_head(proto)
                onnx.checker.check_model(proto)
                onnx.save(proto, str(tmp))
            except ExportError:
                raise
            except Exception as e:  # an exporter failure: try the next one
                raise ExportError(f"{name} exporter failed: {type(e).__name__}: {e}") from e
            diff, tol, agree, rows = _parity(net, tmp, example, atol, rtol, argmax_block)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; the model is public
            os.replace(tmp, path)
        except ExportError as e:
            tmp.unlink(missing_ok=True)
            errors.append(f"{name}: {e}")
            log.warning("ONNX export with the %s exporter failed: %s", name, e)
            continue
        log.info(
            "exported %s (%s exporter, opset %d): max abs diff %.2e, argmax agreement %d/%d",
            path, name, opset, diff, rows, rows,
        )  # fmt: skip
        return ExportResult(path, name, opset, d, f, diff, tol, agree, rows)
    raise ExportError("ONNX export failed:\n  " + "\n  ".join(errors))
