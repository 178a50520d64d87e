"""Build and maintain releases (owner side; no torch)."""

from __future__ import annotations

from encryip_runtime.release.keys import add_licensee, rotate_keys
from encryip_runtime.release.onnx_permute import permute_onnx_outputs
from encryip_runtime.release.plan import ProtectionPlan, plan_protection
from encryip_runtime.release.writer import ReleasePaths, write_release

__all__ = [
    "ProtectionPlan",
    "ReleasePaths",
    "add_licensee",
    "permute_onnx_outputs",
    "plan_protection",
    "rotate_keys",
    "write_release",
]
