"""The committed gRPC stubs must be exactly what scripts/gen_protos.sh makes from protos/."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "encryip_runtime" / "_generated"


def _generated_files(base: Path) -> set[str]:
    return {
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    out = tmp_path / "gen"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fresh, committed = _generated_files(out), _generated_files(COMMITTED)
    assert fresh == committed, (
        f"generated file sets differ: missing {sorted(fresh - committed)}, "
        f"extra {sorted(committed - fresh)}; run scripts/gen_protos.sh"
    )
    stale = [f for f in sorted(fresh) if not filecmp.cmp(out / f, COMMITTED / f, shallow=False)]
    assert not stale, f"stale generated stubs {stale}: run scripts/gen_protos.sh and commit"


def test_stubs_import_as_a_package() -> None:
    from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
    from encryip_runtime._generated.inference import (
        grpc_predict_v2_pb2,
        grpc_predict_v2_pb2_grpc,
    )

    assert encryip_pb2.DESCRIPTOR.package == "encryip.v1"
    assert grpc_predict_v2_pb2.DESCRIPTOR.package == "inference"
    assert hasattr(encryip_pb2_grpc, "EncryIPServicer")
    assert hasattr(grpc_predict_v2_pb2_grpc, "GRPCInferenceServiceServicer")
