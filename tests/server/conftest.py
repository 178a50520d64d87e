"""Helpers for tests against a real server on 127.0.0.1 (port 0, real onnxruntime)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from encryip_runtime.server.app import EncryIPServer, create_server
from encryip_runtime.server.config import ServerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(release_dir: Path, **overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {
        "release_dir": release_dir,
        "host": "127.0.0.1",
        "port": 0,
        "http_port": 0,
        "health_port": 0,
        "metrics_port": 0,
        "drain_seconds": 5.0,
        "max_queue_delay_ms": 1.0,
    }
    settings.update(overrides)
    return ServerConfig(**settings)


@contextlib.contextmanager
def running_server(release_dir: Path, **overrides: Any) -> Iterator[EncryIPServer]:
    for attempt in range(3):
        try:
            server, _ = create_server(make_config(release_dir, **overrides))
            break
        except OSError as exc:
            # A REST port picked by free_port() can be taken by another process before we
            # bind it (port 0 means "off" there): pick another one.
            if "REST port" not in str(exc) or attempt == 2:
                raise
            overrides = {**overrides, "http_port": free_port()}
    server.start()
    try:
        yield server
    finally:
        server.stop(0.4)


def runtime_copy(release_dir: Path, dest: Path) -> Path:
    """A writable copy of a licensee/runtime directory (model + manifest only)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "manifest.json"):
        shutil.copy(release_dir / name, dest / name)
    return dest


def sample_inputs(n: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)


class GatedModel:
    """Wraps a ProtectedModel: ``logits`` waits on ``gate``, so a request (a batch) stays
    in flight inside the model until the test opens it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def logits(self, x: Any) -> Any:
        self.entered.set()
        self.gate.wait(10)
        return self.inner.logits(x)


def gate_current_model(server: EncryIPServer) -> GatedModel:
    """Put a ``GatedModel`` in front of the model ``server`` serves now."""
    loaded = server.store.current
    assert loaded is not None
    gated = GatedModel(loaded.model)
    object.__setattr__(loaded, "model", gated)
    return gated


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d: Path, name: str, ca: str, san: str | None) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d,
    )  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to generate test certificates")
    d = tmp_path_factory.mktemp("certs")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_leaf(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _make_leaf(d, "client", "ca", None)
    _make_leaf(d, "intruder", "other-ca", None)
    return Certs(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        other_ca=d / "other-ca.pem",
        other_client_cert=d / "intruder.pem",
        other_client_key=d / "intruder.key",
    )


def rpc_code(exc: BaseException) -> grpc.StatusCode:
    assert isinstance(exc, grpc.RpcError), exc
    return exc.code()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="session")
def triton_python(request: pytest.FixtureRequest) -> Path:
    """A venv's python with ``tritonclient[grpc,http]`` (created once, cached by pytest).

    tritonclient ships its own ``inference`` protos and pins protobuf 6, so it never
    shares a process with our stubs."""
    cache = Path(request.config.cache.mkdir("encryip-tritonclient-venv"))  # type: ignore[union-attr]
    python = cache / "bin" / "python"
    probe = [str(python), "-c", "import tritonclient.grpc, tritonclient.http"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    try:
        if not python.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(cache)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "tritonclient[grpc,http]"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot create a venv with tritonclient: {exc}")
    if pip.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip(f"pip could not install tritonclient[grpc,http]: {pip.stderr[-500:]}")
    return python


def run_tritonclient(
    python: Path, module: str, script: str, url: str, x: npt.NDArray[Any], tmp_path: Path
) -> Any:
    """Run ``script`` in the tritonclient venv (``triton_python``) after a common preamble:
    ``tc`` is ``tritonclient.<module>``, ``client`` a client of ``url`` that has checked
    the server is live and ready and serves "encryip", ``x`` the inputs. Returns the
    script's last stdout line, parsed as JSON."""
    preamble = f"""
import json, sys
import numpy as np
import tritonclient.{module} as tc

url, npy = sys.argv[1], sys.argv[2]
x = np.load(npy)
client = tc.InferenceServerClient(url=url)
assert client.is_server_live() and client.is_server_ready()
assert client.is_model_ready("encryip")
"""
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    proc = subprocess.run(
        [str(python), "-c", preamble + script, url, str(npy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
