"""The arbitrator: prove a leaked model, key or service is ours and name its licensee.

Python API (the CLI ``encryip-arbitrator`` wraps these)::

    verify_onnx(suspect, vault, alpha=1e-6, manifest_path=None) -> OnnxVerdict
    verify_key(keyfile, vault) -> KeyVerdict
    verify_labels(observed, vault, alpha=1e-6) -> LabelsVerdict
    export_triggers(vault, out_dir) -> list[Path]

Each verdict has ``to_json()`` and ``exit_code`` (0 proven, 1 not proven). Inputs that
allow no decision raise ``EncryIPError`` (the CLI's exit code 2).
"""

from __future__ import annotations

from encryip_runtime.arbitrator.errors import ArbitrationInputError
from encryip_runtime.arbitrator.export_triggers import export_triggers
from encryip_runtime.arbitrator.verify_key import KeyVerdict, verify_key
from encryip_runtime.arbitrator.verify_labels import LabelsVerdict, LicenseeMatch, verify_labels
from encryip_runtime.arbitrator.verify_onnx import (
    CandidateEvidence,
    OnnxVerdict,
    SlotRecovery,
    verify_onnx,
)

__all__ = [
    "ArbitrationInputError",
    "CandidateEvidence",
    "KeyVerdict",
    "LabelsVerdict",
    "LicenseeMatch",
    "OnnxVerdict",
    "SlotRecovery",
    "export_triggers",
    "verify_key",
    "verify_labels",
    "verify_onnx",
]
