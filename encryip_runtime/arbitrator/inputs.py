"""Loading what the arbitrator reads: the vault (+ its arrays) and a suspect ONNX model.

Every failure becomes an ``EncryIPError`` that names the file, never a traceback.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.arbitrator.errors import ArbitrationInputError
from encryip_runtime.exceptions import FormatError, ModelError
from encryip_runtime.formats.vault import Vault, VaultArrays

__all__ = ["SuspectModel", "check_alpha", "load_vault", "load_vault_with_arrays"]

log = logging.getLogger(__name__)


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ArbitrationInputError(f"alpha must be a number, got {alpha!r}")
    if not (0.0 < float(alpha) < 1.0) or math.isnan(alpha):
        raise ArbitrationInputError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def load_vault(path: Path) -> Vault:
    path = Path(path)
    if path.is_dir() and (path / "vault.json").is_file():
        path = path / "vault.json"
    return Vault.load(path)


def load_vault_with_arrays(path: Path) -> tuple[Vault, VaultArrays, Path]:
    """The vault and its arrays (trigger inputs, probe set); a release dir is accepted too."""
    path = Path(path)
    if path.is_dir() and (path / "vault.json").is_file():
        path = path / "vault.json"
    vault = Vault.load(path)
    arrays = vault.load_arrays(path)
    return vault, arrays, path


class SuspectModel:
    """A suspect ONNX classifier run with onnxruntime on the CPU."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError("file not found", path=str(self.path))
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first[:300]})") from None
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(
                f"{self.path}: expected one input and at least one output, found "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        self.input = inputs[0]
        self.output_name = outputs[0].name
        if self.input.type not in ("tensor(uint8)", "tensor(float)"):
            raise ModelError(
                f"{self.path}: input {self.input.name!r} has type {self.input.type}; "
                "expected uint8 raw pixels (or float32)"
            )

    def check_input_shape(self, chw: tuple[int, ...]) -> None:
        shape = list(self.input.shape)
        if len(shape) != 1 + len(chw):
            raise ModelError(
                f"{self.path}: input {self.input.name!r} has shape {shape}; the vault's inputs "
                f"are [batch, {', '.join(map(str, chw))}]"
            )
        for want, got in zip(chw, shape[1:], strict=True):
            if isinstance(got, int) and got != want:
                raise ModelError(
                    f"{self.path}: input {self.input.name!r} has shape {shape}; the vault's "
                    f"inputs are [batch, {', '.join(map(str, chw))}] (a model of another task?)"
                )

    def logits(self, x: npt.NDArray[np.uint8], batch: int = 256) -> npt.NDArray[np.float32]:
        feed_dtype: Any = np.uint8 if self.input.type == "tensor(uint8)" else np.float32
        outs = []
        for i in range(0, len(x), batch):
            xb = np.ascontiguousarray(x[i : i + batch]).astype(feed_dtype, copy=False)
            try:
                (out,) = self.session.run([self.output_name], {self.input.name: xb})
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ModelError(f"{self.path}: inference failed ({first[:300]})") from None
            outs.append(np.asarray(out, dtype=np.float32).reshape(len(xb), -1))
        if not outs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(outs)

    def check_output_size(self, logits: npt.NDArray[np.float32], want: int) -> None:
        got = logits.shape[1]
        if got != want:
            raise ArbitrationInputError(
                f"{self.path}: the model has {got} outputs but the vault's release has {want} "
                "(a model of another release or task; nothing to compare)"
            )
