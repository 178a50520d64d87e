"""End to end: a real MNIST release served over OIP v2 REST on loopback; the JavaScript
SDK predicts and decrypts in Node, and the demo page does it in headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from encryip_runtime.client import EncryIPClient, decrypt_batch, load_key
from encryip_runtime.server.app import EncryIPServer
from tests.sdk_js.conftest import ROOT, SDK
from tests.sdk_js.test_browser import Site, run_page, serve_directory
from tests.server.conftest import free_port, running_server

MNIST = ROOT / "data" / "mnist"


def _mnist_test_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    from exporter.data import read_idx

    x = read_idx(MNIST / "t10k-images-idx3-ubyte")[:n]
    y = read_idx(MNIST / "t10k-labels-idx1-ubyte")[:n]
    return x.reshape(n, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="module")
def mnist_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small CNN, two epochs on 3,000 MNIST images, 16 noise triggers: a real release
    that passes the exporter's self-check (about a minute on 2 quiet cores)."""
    if not MNIST.is_dir():
        pytest.skip("data/mnist missing (scripts/bootstrap.sh fetches it)")
    out = tmp_path_factory.mktemp("mnist") / "release"
    env = {**os.environ, "ENCRYIP_VAULT_PASSPHRASE": "test passphrase (sdk_js)"}
    cmd = [
        sys.executable, "-m", "exporter.cli", "train", "--dataset", "mnist",
        "--data-root", str(MNIST), "--arch", "cnn", "--epochs", "2", "--train-subset", "3000",
        "--test-subset", "500", "--trigger-source", "noise", "--triggers", "16",
        "--max-trigger-epochs", "4",
        "--licensees", "acme,globex", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


Served = tuple[EncryIPServer, Site]


@pytest.fixture(scope="module")
def site_and_server(
    mnist_release: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """acme's variant served (gRPC + REST, CORS for the page's origin) and a static site
    (the SDK plus files a test drops in) on another origin."""
    root = tmp_path_factory.mktemp("site")
    (root / "sdk").symlink_to(ROOT / "sdk")
    acme = mnist_release / "licensees" / "acme"
    with (
        serve_directory(root) as site,
        running_server(acme, cors_origin=site.origin, http_port=free_port()) as server,
    ):
        yield server, site


def _predict_js(
    node: str, server: EncryIPServer, key: Path, x: np.ndarray, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """The SDK's ``examples/predict.js`` on ``x`` against ``server``'s REST port."""
    npy = tmp_path / "digits.npy"
    np.save(npy, x)
    url = f"http://127.0.0.1:{server.http_port}"
    argv = [node, "examples/predict.js", "--server", url, "--key", str(key), "--npy", str(npy)]
    return subprocess.run(argv, cwd=SDK, capture_output=True, text=True, timeout=120)


def test_node_predicts_and_decrypts_like_python(
    node: str, mnist_release: Path, site_and_server: Served, tmp_path: Path
) -> None:
    server, _ = site_and_server
    x, y = _mnist_test_images(64)
    key_file = mnist_release / "keys" / "acme.key"
    out = _predict_js(node, server, key_file, x, tmp_path)
    assert out.returncode == 0, out.stderr
    js = json.loads(out.stdout.strip().splitlines()[-1])
    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        key = load_key(key_file, expected_pk=client.info())
        py = decrypt_batch(client.predict(x), key)
    assert js["licensee"] == "acme"
    assert js["labels"] == py.tolist()  # the same model, so the same classes
    assert (np.asarray(js["labels"]) == y).mean() > 0.5  # MNIST digits, far above chance (0.1)


def test_node_refuses_a_key_of_another_public_key(
    node: str, site_and_server: Served, tmp_path: Path
) -> None:
    from tests.tiny_release import make_tiny_release

    server, _ = site_and_server
    other = make_tiny_release(tmp_path / "other", "secure", ("mallory",))
    out = _predict_js(node, server, other.key("mallory"), _mnist_test_images(2)[0], tmp_path)
    assert out.returncode == 1
    assert "InvalidKeyError" in out.stderr and "does not belong" in out.stderr


def test_browser_page_decrypts_a_served_mnist_prediction(
    chromium: str,
    node: str,
    mnist_release: Path,
    site_and_server: Served,
    tmp_path: Path,
) -> None:
    """The demo page: key file + image in, the server's REST endpoint (CORS), label out."""
    from PIL import Image

    server, site = site_and_server
    x, y = _mnist_test_images(200)
    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        key = load_key(mnist_release / "keys" / "acme.key", expected_pk=client.info())
        py = decrypt_batch(client.predict(x), key)
    i = int(np.flatnonzero(py == y)[0])  # a digit the model gets right
    Image.fromarray(x[i, 0]).save(site.root / "digit.png")
    (site.root / "acme.key").write_bytes((mnist_release / "keys" / "acme.key").read_bytes())
    page = (
        f"/sdk/js/demo/index.html?auto=1&server=http://127.0.0.1:{server.http_port}"
        "&key=/acme.key&image=/digit.png"
    )
    got = run_page(chromium, site, page, tmp_path)
    assert got["error"] is None, got
    assert got["label"] == int(y[i]) and got["licensee"] == "acme", got
