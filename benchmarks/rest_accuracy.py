"""tritonclient.http vs tritonclient.grpc against one served release: decrypted accuracy.

    python -m benchmarks.rest_accuracy [--release DIR] [--images 512]

Serves a licensee's variant (gRPC and REST), sends the first ``--images`` MNIST test
images through tritonclient.grpc and tritonclient.http (binary and JSON tensors) from
their own venv (tritonclient pins protobuf 6), decrypts every answer with the licensee's
key, and prints the accuracies as JSON. Without ``--release`` it trains the small CNN
for one epoch on 3,000 images first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "data" / "mnist"

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th

grpc_url, http_url, npy = sys.argv[1:4]
x = np.load(npy)
out = {}
g = tg.InferenceServerClient(url=grpc_url)
h = th.InferenceServerClient(url=http_url)
for name, mod, client, binary in (("grpc", tg, g, None), ("http_binary", th, h, True),
                                  ("http_json", th, h, False)):
    cts = []
    for i in range(0, len(x), 64):
        chunk = x[i:i + 64]
        inp = mod.InferInput("pixels", list(chunk.shape), "UINT8")
        if binary is None:
            inp.set_data_from_numpy(chunk)
            req = mod.InferRequestedOutput("ciphertext")
        else:
            inp.set_data_from_numpy(chunk, binary_data=binary)
            req = mod.InferRequestedOutput("ciphertext", binary_data=binary)
        res = client.infer("encryip", [inp], outputs=[req]).as_numpy("ciphertext").reshape(-1)
        cts += [c.hex() if isinstance(c, bytes) else str(c) for c in res]
    out[name] = cts
print(json.dumps(out))
"""


def triton_python(cache: Path) -> Path:
    python = cache / "bin" / "python"
    probe = [str(python), "-c", "import tritonclient.grpc, tritonclient.http"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(cache)
    pip = [str(python), "-m", "pip", "install", "-q", "tritonclient[grpc,http]"]
    subprocess.run(pip, check=True, timeout=900)
    return python


def train(out: Path) -> Path:
    env = {**os.environ, "ENCRYIP_VAULT_PASSPHRASE": "benchmark (rest_accuracy)"}
    cmd = [
        sys.executable, "-m", "exporter.cli", "train", "--dataset", "mnist",
        "--data-root", str(MNIST), "--arch", "cnn", "--epochs", "1", "--train-subset", "3000",
        "--test-subset", "500", "--licensees", "acme,globex", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=1800)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rest_accuracy")
    ap.add_argument("--release", type=Path, help="a trained release (default: train one)")
    ap.add_argument("--licensee", default="acme")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--venv", type=Path, default=ROOT / "bench-out" / "tritonclient-venv")
    args = ap.parse_args(argv)

    from encryip_runtime.client import decrypt_batch
    from encryip_runtime.formats.keyfile import LicenseeKey
    from encryip_runtime.server.app import create_server
    from encryip_runtime.server.config import ServerConfig
    from exporter.data import read_idx

    tmp = Path(tempfile.mkdtemp(prefix="rest-accuracy-"))
    release = args.release or train(tmp / "release")
    n = args.images
    x = read_idx(MNIST / "t10k-images-idx3-ubyte")[:n].reshape(n, 1, 28, 28).astype(np.uint8)
    y = read_idx(MNIST / "t10k-labels-idx1-ubyte")[:n].astype(np.int64)
    np.save(tmp / "x.npy", x)
    python = triton_python(args.venv)
    cfg = ServerConfig(
        release_dir=release / "licensees" / args.licensee, host="127.0.0.1", port=0,
        http_port=0, health_port=0, metrics_port=0, log_level="WARNING",
    )  # fmt: skip
    # http_port=0 is "off": bind a free port for REST instead.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    cfg = ServerConfig(**{**cfg.__dict__, "http_port": http_port})
    server, port = create_server(cfg)
    server.start()
    try:
        proc = subprocess.run(
            [str(python), "-c", CLIENT, f"127.0.0.1:{port}", f"127.0.0.1:{http_port}",
             str(tmp / "x.npy")],
            capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
    finally:
        server.stop(1.0)
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    key = LicenseeKey.load(release / "keys" / f"{args.licensee}.key")
    result = {"images": n, "release": str(release)}
    for name, hexes in answers.items():
        labels = decrypt_batch([bytes.fromhex(h) for h in hexes], key)
        result[name] = float(np.mean(labels == y))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
