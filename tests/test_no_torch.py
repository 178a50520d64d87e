"""The runtime never imports torch (docs/design.md §1): checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import importlib, json, pkgutil, sys
import encryip_runtime

names = ["encryip_runtime"]
failed = {}
for info in pkgutil.walk_packages(encryip_runtime.__path__, "encryip_runtime."):
    try:
        importlib.import_module(info.name)
        names.append(info.name)
    except Exception as exc:  # report, don't hide: an import error is a failure too
        failed[info.name] = f"{type(exc).__name__}: {exc}"
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
print(json.dumps({"imported": names, "failed": failed, "torch": heavy}))
"""


def test_runtime_never_imports_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["torch"] == []
    imported = set(report["imported"])
    # the walk really covered the package, including the deep modules
    for must in (
        "encryip_runtime.crypto.ristretto",
        "encryip_runtime.crypto.zp",
        "encryip_runtime.formats.vault",
        "encryip_runtime.release.onnx_permute",
        "encryip_runtime.pipeline",
        "encryip_runtime.attacks.forge",
    ):
        assert must in imported
    expected = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "encryip_runtime").rglob("*.py")
    }
    assert expected <= imported, sorted(expected - imported)
