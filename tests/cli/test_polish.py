"""What a new user ran into with the CLI (issue "Hardening and structure", defect 6)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from server.conftest import Certs, certs, free_port, running_server, sample_inputs

from encryip_runtime.cli.main import main
from encryip_runtime.client import EncryIPClient, RemoteError
from encryip_runtime.formats.jsonio import read_json_document

__all__ = ["certs"]  # the fixture, shared with tests/server


@pytest.fixture(scope="module")
def server(secure_release: Any) -> Iterator[Any]:
    with running_server(secure_release.licensee_dir("acme"), metrics_port=free_port()) as srv:
        yield srv


def _cli(*argv: str, shell_tail: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "encryip_runtime.cli.main", *argv]
    if shell_tail:
        line = " ".join(f"'{c}'" for c in cmd) + " " + shell_tail
        return subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=120, env=os.environ
        )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_predict_into_head_ends_quietly(server: Any, secure_release: Any, tmp_path: Path) -> None:
    """`encryip predict ... | head -1` ended with "unexpected BrokenPipeError"."""
    npy = tmp_path / "x.npy"
    np.save(npy, sample_inputs(2000, seed=3))
    proc = _cli(
        "predict", "--endpoint", f"127.0.0.1:{server.port}", "--key",
        str(secure_release.key("acme")), "--input", str(npy), "--batch-size", "500",
        shell_tail="| head -1; echo \"rc=${PIPESTATUS[0]}\" >&2",
    )  # fmt: skip
    assert len(proc.stdout.splitlines()) == 1
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "rc=141" in proc.stderr or "rc=0" in proc.stderr


def test_bad_input_files_are_named(
    server: Any, secure_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 1, 8, 8), np.uint8))
    chw = tmp_path / "chw.npy"  # one input, but 3 channels for a 1-channel model
    np.save(chw, np.zeros((3, 8, 8), np.uint8))
    folder = tmp_path / "images"
    folder.mkdir()
    base = ["predict", "--endpoint", f"127.0.0.1:{server.port}"]
    base += ["--key", str(secure_release.key("acme")), "--input"]
    assert main([*base, str(empty)]) == 2  # was: exit 0, no output
    assert f"'{empty}' holds no inputs (shape [0, 1, 8, 8])" in capsys.readouterr().err
    assert main([*base, str(folder)]) == 2  # was: "no such file"
    assert f"'{folder}' is a directory" in capsys.readouterr().err
    assert main([*base, str(chw)]) == 2  # was: the reshaped [1, 3, 8, 8]
    err = capsys.readouterr().err
    assert f"'{chw}' has shape [3, 8, 8]" in err and "[N, 1, 8, 8]" in err


def test_unknown_flag_shows_the_subcommand_usage() -> None:
    proc = _cli("predict", "--endpoint", "127.0.0.1:1", "--key", "k", "--input", "x", "--bogus")
    assert proc.returncode == 2
    assert "usage: encryip predict" in proc.stderr, proc.stderr
    assert "unrecognized arguments: --bogus" in proc.stderr
    proc = _cli("keys", "add", "rel", "name", "--bogus")
    assert "usage: encryip keys add" in proc.stderr
    arb = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.arbitrator.cli", "verify-key", "k", "--vault",
         "v", "--bogus"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert arb.returncode == 2 and "usage: encryip-arbitrator verify-key" in arb.stderr


def test_no_grpc_core_log_lines(secure_release: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _cli(
            "serve", str(secure_release.licensee_dir("acme")), "--host", "127.0.0.1",
            "--port", str(busy.getsockname()[1]), "--health-port", "0", "--metrics-port", "0",
        )  # fmt: skip
    assert proc.returncode == 1
    assert ".cc:" not in proc.stderr, proc.stderr  # add_port.cc, chttp2_server.cc ...
    assert proc.stderr.strip().splitlines()[-1].startswith("encryip serve: error: cannot start")


def test_plaintext_client_against_tls_gets_a_hint(secure_release: Any, certs: Certs) -> None:
    d = secure_release.licensee_dir("acme")
    with (
        running_server(d, tls_cert=certs.server_cert, tls_key=certs.server_key) as srv,
        EncryIPClient(f"127.0.0.1:{srv.port}", timeout=3) as plain,
        pytest.raises(RemoteError) as info,
    ):
        plain.info()
    assert info.value.status_code is grpc.StatusCode.UNAVAILABLE  # the enum, not only a name
    assert info.value.code == "UNAVAILABLE"
    assert "the server may expect TLS" in str(info.value), str(info.value)


def test_client_defaults_to_tls_off_loopback() -> None:
    assert EncryIPClient("127.0.0.1:1").tls is False
    assert EncryIPClient("localhost:1").tls is False
    assert EncryIPClient("example.com:443").tls is True  # never plaintext by default
    assert EncryIPClient("10.0.0.7:8001", tls=False).tls is False  # explicit choice


def test_remote_error_carries_the_status_code(server: Any) -> None:
    with (
        EncryIPClient(f"127.0.0.1:{server.port}") as client,
        pytest.raises(RemoteError) as info,
    ):
        client.predict(sample_inputs(1), model_name="resnet")
    assert info.value.status_code is grpc.StatusCode.NOT_FOUND  # unknown model: NOT_FOUND


def test_request_seconds_counts_predictions_only_and_reloads_declared(server: Any) -> None:
    with EncryIPClient(f"127.0.0.1:{server.port}") as client:
        for _ in range(3):
            client.info(refresh=True)
        client.predict(sample_inputs(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        text = r.read().decode()
    assert 'encryip_requests_total{code="OK",method="encryip.v1.EncryIP/GetModelInfo"}' in text
    assert 'encryip_request_seconds_count{method="encryip.v1.EncryIP/GetModelInfo"}' not in text
    assert 'encryip_request_seconds_count{method="encryip.v1.EncryIP/Predict"}' in text
    for result in ("success", "failure"):  # before any reload
        assert f'encryip_model_reloads_total{{result="{result}"}} 0.0' in text


def test_health_command(secure_release: Any, capsys: pytest.CaptureFixture[str]) -> None:
    hport = free_port()
    with running_server(secure_release.licensee_dir("acme"), health_port=hport) as srv:
        for port in (srv.port, hport):
            assert main(["health", "--endpoint", f"127.0.0.1:{port}", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert doc["status"] == "SERVING" and doc["ready"] and doc["live"]
        srv.health.set_serving(False)  # e.g. draining: alive, not ready
        assert main(["health", "--endpoint", f"127.0.0.1:{srv.port}"]) == 1
        assert "NOT_SERVING (not ready)" in capsys.readouterr().out
        assert main(["health", "--endpoint", f"127.0.0.1:{srv.port}", "--live"]) == 0
        capsys.readouterr()
    assert main(["health", "--endpoint", f"127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    assert "not alive" in capsys.readouterr().err


def test_typos_in_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"format": "x\x01"}')  # json: "Invalid control character at"
    with pytest.raises(Exception, match="not valid JSON") as info:
        read_json_document(bad, "x")
    assert "at at" not in str(info.value) and "line 1, column" in str(info.value)
    source = Path(__file__).resolve().parents[2] / "encryip_runtime" / "arbitrator"
    assert "!r}'s" not in (source / "verify_labels.py").read_text()  # 'globex''s
