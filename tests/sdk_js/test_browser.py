"""The JavaScript SDK in headless Chromium: the conformance vectors in a page, and (in
test_rest_e2e.py) the demo page that takes a key file and an image, calls the server's
REST endpoint and shows the label.

A page reports what it shows by POSTing it to ``/result`` on the static server that
served it (``?report=/result``), so a test waits for the page, however busy the machine,
instead of guessing how long its scripts take.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


class _Handler(SimpleHTTPRequestHandler):
    """Static files, plus ``POST /result`` where a page reports what it shows."""

    def __init__(self, *args: Any, results: queue.Queue[dict[str, Any]], **kw: Any) -> None:
        self.results = results
        super().__init__(*args, **kw)

    def do_POST(self) -> None:
        if self.path != "/result":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.results.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class Site:
    origin: str
    root: Path
    results: queue.Queue[dict[str, Any]]


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[Site]:
    """A static HTTP server for ``directory`` on loopback."""
    results: queue.Queue[dict[str, Any]] = queue.Queue()
    handler = functools.partial(_Handler, directory=str(directory), results=results)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{httpd.server_address[1]}", directory, results)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def static_site() -> Iterator[Site]:
    """The repository root over HTTP (pages, the SDK's modules, vectors)."""
    with serve_directory(ROOT) as site:
        yield site


def run_page(
    chromium: str, site: Site, path_and_query: str, tmp_path: Path, timeout_s: float = 240
) -> dict[str, Any]:
    """Open a page of ``site`` in headless Chromium and return what it reports."""
    while not site.results.empty():
        site.results.get_nowait()
    sep = "&" if "?" in path_and_query else "?"
    url = f"{site.origin}{path_and_query}{sep}report=/result"
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        return site.results.get(timeout=timeout_s)
    except queue.Empty:
        pytest.fail(f"{url}: no result from the page within {timeout_s:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_browser_decrypts_every_vector(
    chromium: str, node: str, static_site: Site, tmp_path: Path
) -> None:
    vectors = sorted((ROOT / "vectors").glob("*.json"))
    assert vectors
    for path in vectors:
        doc = json.loads(path.read_text())
        got = run_page(
            chromium,
            static_site,
            f"/sdk/js/demo/selftest.html?vectors=/vectors/{path.name}",
            tmp_path,
        )
        assert got == {"ok": len(doc["decrypt"]), "bad": 0, "error": None}, (path.name, got)
