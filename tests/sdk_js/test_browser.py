"""The JavaScript SDK in headless Chromium: the conformance vectors, and the demo page
that takes a key file and an image, calls the server's REST endpoint and shows the label."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.sdk_js.conftest import ROOT

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A static HTTP server for ``directory`` on loopback; yields its origin."""
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def static_site() -> Iterator[str]:
    """The repository root over HTTP (pages, the SDK's modules, vectors)."""
    with serve_directory(ROOT) as origin:
        yield origin


def dump_dom(chromium: str, url: str, tmp_path: Path, budget_ms: int = 30000) -> str:
    """Load ``url`` headless, let its scripts run, return the final DOM."""
    out = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_browser_decrypts_every_vector(
    chromium: str, node: str, static_site: str, tmp_path: Path
) -> None:
    vectors = sorted((ROOT / "vectors").glob("*.json"))
    assert vectors
    for path in vectors:
        url = f"{static_site}/sdk/js/demo/selftest.html?vectors=/vectors/{path.name}"
        dom = dump_dom(chromium, url, tmp_path)
        assert "bad=0" in dom and "ok=" in dom, dom[-1500:]
