"""`encryip` CLI: exit codes, stdout/stderr, against a real server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server.conftest import running_server, sample_inputs

from encryip_runtime.cli.main import main
from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey


@pytest.fixture(scope="module")
def endpoint(secure_release: Any) -> Iterator[str]:
    with running_server(secure_release.licensee_dir("acme")) as server:
        yield f"127.0.0.1:{server.port}"


def test_help_is_fast_and_lists_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "encryip_runtime.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for cmd in ("serve", "predict", "info", "decrypt"):
        assert cmd in proc.stdout
    imported = proc.stderr
    for heavy in ("onnxruntime", "numpy", "grpc"):
        assert f" {heavy}\n" not in imported and f"| {heavy}" not in imported, heavy


def test_serve_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", str(tmp_path / "nope"), "--port", "x", "--max-batch", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--port: not an integer (got 'x')" in err
    assert "--max-batch: must be at least 1" not in err or "RELEASE_DIR" in err
    assert "Traceback" not in err


def test_info(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--endpoint", endpoint, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["profile"] == "secure" and info["num_classes"] == 10
    assert info["crypto_backend"] in ("native", "libsodium")
    assert main(["info", "--endpoint", endpoint]) == 0
    out = capsys.readouterr().out
    assert "ristretto255" in out and f"crypto backend:   {info['crypto_backend']}" in out


def test_predict_npy_and_image_then_decrypt(
    endpoint: str, secure_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    x = sample_inputs(3, seed=5)
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    png = tmp_path / "digit.png"
    Image.fromarray(x[0, 0]).save(png)
    key = str(secure_release.key("acme"))
    args = ["predict", "--endpoint", endpoint, "--key", key, "--input", str(npy), str(png)]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sk_fp = LicenseeKey.load(Path(key)).pk_fingerprint
    assert out["pk_fingerprint"] == sk_fp and out["model_name"] == "encryip"
    rows = out["predictions"]
    assert [r["input"] for r in rows] == [str(npy)] * 3 + [str(png)]
    assert rows[0]["label"] == rows[3]["label"]  # the PNG holds the first array's pixels
    assert all(r["class_name"] == f"class{r['label']}" for r in rows)
    sk = LicenseeKey.load(Path(key))
    assert [r["label"] for r in rows[:3]] == list(
        decrypt_batch([bytes.fromhex(r["ciphertext"]) for r in rows[:3]], sk)
    )
    assert main(args) == 0
    assert capsys.readouterr().out.count("\tclass") == 4
    cts = [r["ciphertext"] for r in rows]
    assert main(["decrypt", "--key", key, "--ciphertext", *cts, "--json"]) == 0
    decrypted = json.loads(capsys.readouterr().out)
    assert [d["label"] for d in decrypted] == [r["label"] for r in rows]


def test_predict_problems_listed(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "predict", "--endpoint", endpoint, "--key", str(tmp_path / "missing.key"),
        "--input", str(tmp_path / "a.npy"), str(tmp_path / "b.png"), "--batch-size", "0",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "--key:" in err and "missing.key" in err
    assert f"no such file: '{tmp_path / 'a.npy'}'" in err
    assert f"no such file: '{tmp_path / 'b.png'}'" in err
    assert "--batch-size" in err and "Traceback" not in err


def test_predict_wrong_key(
    endpoint: str, paper_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", sample_inputs(1))
    code = main([
        "predict", "--endpoint", endpoint, "--key", str(paper_release.key("acme")),
        "--input", str(tmp_path / "x.npy"),
    ])  # fmt: skip
    assert code == 1
    assert "profile 'paper'" in capsys.readouterr().err


def test_decrypt_bad_hex(secure_release: Any, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(secure_release.key("acme"))
    assert main(["decrypt", "--key", key, "--ciphertext", "zz", "abcd"]) == 2
    err = capsys.readouterr().err
    assert "#1: not hex" in err and "#2: 2 bytes" in err


def test_unreachable_server(secure_release: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["info", "--endpoint", "127.0.0.1:1", "--timeout", "1"])
    assert code == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_decrypt_reads_predict_json_and_refuses_another_pk(
    endpoint: str,
    secure_release: Any,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tiny_release import make_tiny_release

    x = sample_inputs(4, seed=6)
    np.save(tmp_path / "x.npy", x)
    key = str(secure_release.key("acme"))
    args = ["predict", "--endpoint", endpoint, "--key", key, "--input", str(tmp_path / "x.npy")]
    assert main([*args, "--json"]) == 0
    preds = tmp_path / "preds.json"
    preds.write_text(capsys.readouterr().out)
    want = [r["label"] for r in json.loads(preds.read_text())["predictions"]]
    # Read back directly: the same labels, with or without --manifest/--pk of this deployment.
    manifest = secure_release.licensee_dir("acme") / "manifest.json"
    fp = LicenseeKey.load(Path(key)).pk_fingerprint
    for extra in ([], ["--manifest", str(manifest)], ["--pk", fp]):
        assert main(["decrypt", "--key", key, "--predictions", str(preds), "--json", *extra]) == 0
        assert [r["label"] for r in json.loads(capsys.readouterr().out)] == want
    # A key of another public key is refused, whoever names the public key.
    other = make_tiny_release(tmp_path_factory.mktemp("other"), "secure", seed=3)
    other_key = str(other.key("acme"))
    assert main(["decrypt", "--key", other_key, "--predictions", str(preds)]) == 1
    err = capsys.readouterr().err
    assert "does not belong to the public key of the predictions" in err
    cts = [r["ciphertext"] for r in json.loads(preds.read_text())["predictions"]]
    other_manifest = str(other.licensee_dir("acme") / "manifest.json")
    assert main(["decrypt", "--key", key, "--ciphertext", *cts, "--manifest", other_manifest]) == 1
    assert "--manifest" in capsys.readouterr().err
    assert main(["decrypt", "--key", key, "--ciphertext", *cts, "--pk", "ab" * 32]) == 1
    # Without a named public key, a wrong key still yields labels: decryption never
    # rejects (a rejection would tell a trigger from an ordinary prediction).
    assert main(["decrypt", "--key", other_key, "--ciphertext", *cts, "--json"]) == 0
    labels = [r["label"] for r in json.loads(capsys.readouterr().out)]
    assert len(labels) == 4 and all(0 <= y < 10 for y in labels)
    # Usage problems are listed at once.
    assert main(["decrypt", "--key", key, "--pk", "xyz"]) == 2
    err = capsys.readouterr().err
    assert "--ciphertext/--predictions: give exactly one" in err and "--pk:" in err


def test_predict_over_rest_and_v2_grpc(
    secure_release: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.conftest import free_port

    x = sample_inputs(3, seed=9)
    np.save(tmp_path / "x.npy", x)
    key = str(secure_release.key("acme"))
    labels = []
    with running_server(secure_release.licensee_dir("acme"), http_port=free_port()) as server:
        for endpoint, extra in (
            (f"127.0.0.1:{server.port}", []),
            (f"http://127.0.0.1:{server.http_port}", []),
            (f"grpc://127.0.0.1:{server.port}", ["--protocol", "v2"]),
        ):
            args = ["predict", "--endpoint", endpoint, "--key", key, "--json", *extra]
            assert main([*args, "--input", str(tmp_path / "x.npy")]) == 0
            out = json.loads(capsys.readouterr().out)
            assert out["protocol"] == ("encryip.v1" if not extra and ":/" not in endpoint else "v2")
            labels.append([r["label"] for r in out["predictions"]])
        assert main(["health", "--endpoint", f"http://127.0.0.1:{server.http_port}"]) == 0
    assert labels[0] == labels[1] == labels[2]
