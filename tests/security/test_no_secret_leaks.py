"""No secret scalar ever appears in logs, errors, metrics, model info or CLI output.

One fresh secure release; every secret scalar of its vault (t, each licensee's a and b)
and of its key files, in every textual form a leak could take (the 32-byte little-endian
hex of the files, big-endian hex, 0x-hex, decimal). Then: a server with DEBUG logging
captured, the SDK (info, predict, load_key, decrypt, a wrong key), bad requests of both
services, GetModelInfo / ModelMetadata / ServerMetadata, /metrics, the CLI (serve refusal,
info, predict, decrypt, keys add / list, with --debug) and a ``serve --debug`` child process.
Everything they emit is grepped.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from reliability.helpers import server_process
from server.conftest import free_port, running_server, sample_inputs
from tiny_release import TinyRelease, make_tiny_release

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.cli.main import main
from encryip_runtime.client import EncryIPClient, decrypt, decrypt_batch, load_key
from encryip_runtime.exceptions import EncryIPError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.vault import Vault


def secret_forms(k: int) -> set[str]:
    """Every textual form of the scalar ``k`` worth grepping for (long enough to be unique)."""
    le = k.to_bytes(32, "little").hex()
    be = k.to_bytes(32, "big").hex()
    forms = {le, be, le.upper(), be.upper(), str(k), hex(k), format(k, "x")}
    # A prefix of 24 hex digits catches truncated or reformatted dumps too.
    forms |= {le[:24], be[:24], format(k, "x")[:24], str(k)[:24]}
    return {f for f in forms if len(f) >= 16}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> TinyRelease:
    return make_tiny_release(tmp_path_factory.mktemp("leak") / "release", "secure")


@pytest.fixture(scope="module")
def secrets(release: TinyRelease) -> dict[str, set[str]]:
    vault = Vault.load(release.paths.vault)
    scalars = {"t": vault.t}
    for rec in vault.licensees:
        scalars[f"vault:{rec.name}.a"] = rec.sk.a
        scalars[f"vault:{rec.name}.b"] = rec.sk.b
    for name in release.licensees:
        key = LicenseeKey.load(release.key(name))
        scalars[f"key:{name}.a"] = key.sk.a
        scalars[f"key:{name}.b"] = key.sk.b
    for name in release.licensees:  # the key file holds exactly the vault's record
        assert scalars[f"key:{name}.a"] == scalars[f"vault:{name}.a"]
        assert scalars[f"key:{name}.b"] == scalars[f"vault:{name}.b"]
    assert len(set(scalars.values())) == 1 + 2 * len(release.licensees)
    return {what: secret_forms(k) for what, k in scalars.items()}


def assert_no_secrets(text: str, secrets: dict[str, set[str]], where: str) -> None:
    low = text.lower()
    for what, forms in secrets.items():
        for form in forms:
            assert form.lower() not in low, f"{what} ({form[:8]}…) leaked in {where}"


def test_the_grep_finds_a_planted_secret(secrets: dict[str, set[str]]) -> None:
    """The check itself can fail: a scalar pasted into text is caught in any of its forms."""
    forms = secrets["t"]
    for form in forms:
        with pytest.raises(AssertionError, match="leaked"):
            assert_no_secrets(f"debug: value={form} end", secrets, "planted")


def test_server_client_metrics_and_info(
    release: TinyRelease,
    secrets: dict[str, set[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    collected: list[str] = []
    x = sample_inputs(5)
    with running_server(release.licensee_dir("acme"), metrics_port=free_port()) as server:
        target = f"127.0.0.1:{server.port}"
        with EncryIPClient(target) as client:
            info = client.info()
            key = client.load_key(release.key("acme"))
            pred = client.predict(x)
            labels = decrypt_batch(pred, key)
            assert decrypt(pred[0], key) == labels[0]
            collected += [repr(info), str(info.to_json()), repr(key), repr(pred)]
            collected += [repr(Vault.load(release.paths.vault))]
            # A key of another licensee of the same release works; one of another release
            # fails with a message that must not quote either key.
            other = make_tiny_release(tmp_path / "other", "secure", licensees=("zed",))
            with pytest.raises(EncryIPError) as err:
                client.load_key(other.key("zed"))
            collected.append(str(err.value))
            with pytest.raises(EncryIPError) as err:
                load_key(other.key("zed"), expected_pk=info)
            collected.append(str(err.value))
        with grpc.insecure_channel(target) as channel:
            stub = encryip_pb2_grpc.EncryIPStub(channel)
            v2 = pb_grpc.GRPCInferenceServiceStub(channel)
            collected.append(str(stub.GetModelInfo(encryip_pb2.GetModelInfoRequest(), timeout=5)))
            collected.append(
                str(v2.ModelMetadata(pb.ModelMetadataRequest(name="encryip"), timeout=5))
            )
            collected.append(str(v2.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)))
            bad = [
                encryip_pb2.PredictRequest(
                    input=encryip_pb2.Tensor(dtype="uint8", shape=[1, 1, 8, 8], data=b"\0")
                ),
                encryip_pb2.PredictRequest(model_name="nope"),
                encryip_pb2.PredictRequest(
                    input=encryip_pb2.Tensor(
                        dtype="uint8", shape=[1, 1, 8, 8], data=x[0].tobytes()
                    ),
                    return_onehot=True,
                ),
            ]
            for req in bad:
                with pytest.raises(grpc.RpcError) as rpc_err:
                    stub.Predict(req, timeout=5)
                collected.append(str(rpc_err.value.details()))
            infer = pb.ModelInferRequest(model_name="encryip")
            infer.inputs.add(name="pixels", datatype="FP16", shape=[1])
            with pytest.raises(grpc.RpcError) as rpc_err:
                v2.ModelInfer(infer, timeout=5)
            collected.append(str(rpc_err.value.details()))
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "encryip_requests_total" in metrics
        collected.append(metrics)
    logs = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    assert "encryip_runtime" in logs  # DEBUG logging really was captured
    collected.append(logs)
    for i, text in enumerate(collected):
        assert_no_secrets(text, secrets, f"output #{i}: {text[:60]!r}")


def test_cli_commands(
    release: TinyRelease,
    secrets: dict[str, set[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    npy = tmp_path / "x.npy"
    np.save(npy, sample_inputs(3))
    outputs: list[str] = []
    with running_server(release.licensee_dir("acme")) as server:
        endpoint = f"127.0.0.1:{server.port}"
        key = str(release.key("acme"))
        runs = [
            ["info", "--endpoint", endpoint, "--json"],
            ["predict", "--endpoint", endpoint, "--key", key, "--input", str(npy), "--json"],
            ["predict", "--endpoint", endpoint, "--key", key, "--input", str(npy)],
            ["predict", "--endpoint", endpoint, "--key", str(release.key("globex")),
             "--input", str(npy), "--batch-size", "0"],
            ["keys", "list", str(release.root), "--json"],
            ["keys", "list", str(release.root)],
        ]  # fmt: skip
        for argv in runs:
            main(argv)
            captured = capsys.readouterr()
            outputs += [captured.out, captured.err]
        pred = EncryIPClient(endpoint).predict(sample_inputs(1))
        for argv in (
            ["decrypt", "--key", key, "--ciphertext", pred[0].hex(), "--json"],
            ["decrypt", "--key", key, "--ciphertext", "zz", "00" * 96],
        ):
            main(argv)
            captured = capsys.readouterr()
            outputs += [captured.out, captured.err]
    # --debug raises instead of printing; the traceback must not carry secrets either.
    writable = make_tiny_release(tmp_path / "w", "secure")
    for argv in (
        ["keys", "add", str(writable.root), "newcomer", "--json", "--debug"],
        ["decrypt", "--key", str(writable.key("acme")), "--ciphertext", "00" * 96, "--debug"],
    ):
        try:
            main(argv)
        except Exception as exc:  # --debug re-raises: its text is what a user would see
            outputs.append(f"{type(exc).__name__}: {exc}")
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
    outputs.append("\n".join(r.getMessage() for r in caplog.records))
    secrets_w = dict(secrets)
    vault_w = Vault.load(writable.paths.vault)
    secrets_w["writable:t"] = secret_forms(vault_w.t)
    for rec in vault_w.licensees:
        secrets_w[f"writable:{rec.name}.a"] = secret_forms(rec.sk.a)
        secrets_w[f"writable:{rec.name}.b"] = secret_forms(rec.sk.b)
    new_key = LicenseeKey.load(writable.paths.key("newcomer"))
    secrets_w["newcomer.a"] = secret_forms(new_key.sk.a)
    secrets_w["newcomer.b"] = secret_forms(new_key.sk.b)
    for i, text in enumerate(outputs):
        assert_no_secrets(text, secrets_w, f"CLI output #{i}: {text[:80]!r}")


def test_serve_debug_child_process(
    release: TinyRelease, secrets: dict[str, set[str]], tmp_path: Path
) -> None:
    """``encryip --debug serve`` in its own process: everything it logs while serving."""
    port, hport = free_port(), free_port()
    with server_process(release.licensee_dir("acme"), port, hport, "--log-level", "DEBUG") as proc:
        with EncryIPClient(f"127.0.0.1:{port}") as client:
            client.predict(sample_inputs(4))
            client.info()
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "DEBUG" in out or "INFO" in out
    assert_no_secrets(out, secrets, "serve log")
    # And the refusal of a directory holding secrets, as a user sees it.
    refused = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", "serve", str(release.root), "--debug"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert_no_secrets(refused.stdout + refused.stderr, secrets, "serve refusal")
