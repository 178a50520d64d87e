"""The arbitrator: prove a leaked model, key or service is ours and name its licensee.

Python API (the CLI ``encryip-arbitrator`` wraps these)::

    verify_onnx(suspect, vault, alpha=1e-6) -> OnnxVerdict
    verify_key(keyfile, vault) -> KeyVerdict
    verify_labels(observed, vault, alpha=1e-6) -> LabelsVerdict
    export_triggers(vault, out_dir) -> list[Path]
"""

from __future__ import annotations

from encryip_runtime.arbitrator.verify_onnx import (
    CandidateEvidence,
    OnnxVerdict,
    SlotRecovery,
    verify_onnx,
)

__all__ = ["CandidateEvidence", "OnnxVerdict", "SlotRecovery", "verify_onnx"]
