"""The JavaScript SDK (sdk/js) under Node and headless Chromium.

Node ≥ 18, the SDK's npm packages (``npm ci`` in sdk/js, done by scripts/bootstrap.sh) and
Debian's ``chromium`` are installed by bootstrap. Under ``CI=true`` a missing piece is a
failure; elsewhere the tests skip and say what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "js"


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (scripts/bootstrap.sh installs it; CI must have it)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        _missing("node is not installed")
    assert exe is not None
    major = int(
        subprocess.run([exe, "--version"], capture_output=True, text=True)
        .stdout.strip()
        .lstrip("v")
        .split(".")[0]
    )
    if major < 18:
        _missing(f"node {major} is older than 18")
    if not (SDK / "node_modules" / "libsodium-wrappers-sumo").is_dir():
        _missing("sdk/js/node_modules missing: run `npm ci` in sdk/js")
    return exe


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _missing("chromium is not installed (Debian package chromium)")
    assert exe is not None
    return exe
