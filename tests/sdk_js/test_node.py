"""`node --test` runs every conformance vector through the JavaScript SDK."""

from __future__ import annotations

import subprocess

from tests.sdk_js.conftest import SDK


def test_node_runs_every_vector(node: str) -> None:
    out = subprocess.run(
        [node, "--test", "test/"], cwd=SDK, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout
