"""The tree stays ruff- and mypy-clean (STYLE.md): a lint regression fails CI like a bug."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY_DIRS = ["encryip_runtime", "exporter", "tests", "benchmarks"]


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is in the dev extra)")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_check() -> None:
    r = _run(_tool("ruff"), "check", "--output-format", "concise", *PY_DIRS)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_format() -> None:
    r = _run(_tool("ruff"), "format", "--check", *PY_DIRS)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy() -> None:
    r = _run(_tool("mypy"), "encryip_runtime", "exporter")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
