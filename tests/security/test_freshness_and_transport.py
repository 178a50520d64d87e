"""Ciphertexts are never reused; TLS/mTLS/token refusal paths beyond tests/server/test_security.

Freshness (secure profile): over many requests for the same input, concurrent, with and
without the re-randomiser pool, no component (u1, u2 or u3) of any response ever appears
twice. The paper profile cannot promise this (Z_11^* has 10 elements) and the test shows it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from server.conftest import Certs, running_server, sample_inputs

from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.client import EncryIPClient, RemoteError, decrypt_batch
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.pipeline import ProtectedModel


def components(wire: np.ndarray, width: int) -> list[bytes]:
    return [bytes(row[k * width : (k + 1) * width]) for row in wire for k in range(3)]


@pytest.mark.parametrize("pool", [0, 40], ids=["no-pool", "pool"])
def test_protected_model_never_repeats_a_component(secure_release: Any, pool: int) -> None:
    """8 threads x 40 calls x 6 rows of the same image through one model: the pool (smaller
    than the demand, so it drains, refills and falls back inline) hands out each once."""
    pm = ProtectedModel.load(secure_release.licensee_dir("acme"), pool_capacity=pool)
    key = LicenseeKey.load(secure_release.key("acme"))
    x = np.repeat(sample_inputs(1, seed=11), 6, axis=0)
    outs: list[np.ndarray] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(40):
            w = pm.predict(x)
            with lock:
                outs.append(w)

    try:
        assert (pm.pool is None) == (pool == 0)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        pm.close()
    wire = np.concatenate(outs)
    assert len(wire) == 8 * 40 * 6
    comps = components(wire, 32)
    assert len(set(comps)) == len(comps), "a ciphertext component was reused"
    labels = decrypt_batch([bytes(r) for r in wire], key)
    assert len(set(labels.tolist())) == 1  # all fresh, all the same label


@pytest.mark.parametrize("pool", [0, 16], ids=["no-pool", "pool"])
def test_server_responses_never_share_a_component(secure_release: Any, pool: int) -> None:
    x = np.repeat(sample_inputs(1, seed=12), 4, axis=0)
    seen: list[bytes] = []
    lock = threading.Lock()
    with running_server(secure_release.licensee_dir("acme"), reroll_pool=pool) as server:

        def work() -> None:
            with EncryIPClient(f"127.0.0.1:{server.port}") as client:
                for _ in range(30):
                    pred = client.predict(x)
                    with lock:
                        for ct in pred:
                            seen.extend(ct[k * 32 : (k + 1) * 32] for k in range(3))

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(seen) == 6 * 30 * 4 * 3
    assert len(set(seen)) == len(seen)


def test_paper_profile_repeats_components(paper_release: Any) -> None:
    """Not promised: in Z_11^* a handful of predictions already repeat components."""
    pm = ProtectedModel.load(paper_release.licensee_dir("acme"), pool_capacity=64)
    assert pm.pool is None  # no pool in the paper profile
    wire = pm.predict(np.repeat(sample_inputs(1), 50, axis=0))
    comps = components(wire, 2)
    assert len(set(comps)) < len(comps)


# -- transport and token refusals ----------------------------------------------------------


def test_token_guards_every_service_but_health(secure_release: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  tok-123  \n")  # surrounding whitespace is not part of the token
    with running_server(
        secure_release.licensee_dir("acme"), token_file=token_file, allow_insecure_token=True
    ) as server:
        target = f"127.0.0.1:{server.port}"
        with grpc.insecure_channel(target) as channel:
            v2 = pb_grpc.GRPCInferenceServiceStub(channel)
            req = pb.ModelInferRequest(model_name="encryip")
            t = req.inputs.add(name="pixels", datatype="UINT8", shape=[1, 1, 8, 8])
            req.raw_input_contents.append(sample_inputs(1).tobytes())
            calls = [
                lambda md: v2.ModelInfer(req, timeout=5, metadata=md),
                lambda md: v2.ModelMetadata(pb.ModelMetadataRequest(name="encryip"), timeout=5,
                                            metadata=md),
                lambda md: v2.ServerMetadata(pb.ServerMetadataRequest(), timeout=5, metadata=md),
            ]  # fmt: skip
            for call in calls:
                for md in ((), (("authorization", "Basic tok-123"),),
                           (("authorization", "bearer tok-123"),),
                           (("authorization", "Bearer tok-1234"),),
                           (("x-token", "tok-123"),)):  # fmt: skip
                    with pytest.raises(grpc.RpcError) as info:
                        call(md)
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, md
                call((("authorization", "Bearer tok-123"),))
            assert t.name == "pixels"
        with EncryIPClient(target, token="tok-123") as client:
            assert len(client.predict(sample_inputs(2))) == 2


def test_mtls_with_token_needs_both(secure_release: Any, certs: Certs, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-mtls")
    ca = certs.ca.read_bytes()
    cert, key = certs.client_cert.read_bytes(), certs.client_key.read_bytes()
    with running_server(
        secure_release.licensee_dir("acme"),
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
        token_file=token_file,
    ) as server:
        target = f"127.0.0.1:{server.port}"
        kwargs: dict[str, Any] = {"root_certificates": ca, "client_cert": cert, "client_key": key}
        with EncryIPClient(target, token="tok-mtls", **kwargs) as ok:
            assert len(ok.predict(sample_inputs(1))) == 1
        with EncryIPClient(target, token="wrong", **kwargs) as bad_token:
            with pytest.raises(RemoteError) as info:
                bad_token.predict(sample_inputs(1))
            assert info.value.code == "UNAUTHENTICATED"
        with EncryIPClient(target, token="tok-mtls", root_certificates=ca, timeout=3) as no_cert:
            with pytest.raises(RemoteError) as info:
                no_cert.predict(sample_inputs(1))
            assert info.value.code == "UNAVAILABLE"  # the handshake fails before any RPC


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", "serve",
         "--host", "127.0.0.1", "--port", "0", "--health-port", "0", "--metrics-port", "0",
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_bad_security_settings_refused_at_start(
    secure_release: Any, certs: Certs, tmp_path: Path
) -> None:
    d = str(secure_release.licensee_dir("acme"))
    empty = tmp_path / "empty-token"
    empty.write_text(" \n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cases = {
        "empty token file": (["--token-file", str(empty), "--allow-insecure-token"], "empty"),
        "missing token file": (
            ["--token-file", str(tmp_path / "nope"), "--allow-insecure-token"],
            "no such file",
        ),
        "token over plaintext": (["--token-file", str(empty)], "--allow-insecure-token"),
        "cert without key": (["--tls-cert", str(certs.server_cert)], "give both or neither"),
        "client CA without TLS": (["--tls-client-ca", str(certs.ca)], "needs --tls-cert"),
        "key of another cert": (
            ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.client_key)],
            "cannot start",
        ),
        "garbage certificate": (
            ["--tls-cert", str(garbage), "--tls-key", str(certs.server_key)],
            "cannot start",
        ),
    }
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases["port in use"] = (["--port", str(busy.getsockname()[1])], "cannot start")
        for name, (args, needle) in cases.items():
            proc = _serve(d, *args)
            assert proc.returncode in (1, 2), (name, proc.returncode, proc.stderr[-500:])
            last = proc.stderr.strip().splitlines()[-1]  # (grpc's own C-core lines come first)
            assert last.startswith("encryip serve: error:"), (name, last)
            assert needle in last and "unexpected" not in last, (name, last)
            assert "Traceback" not in proc.stderr, name
            assert "-----BEGIN" not in proc.stderr and "PRIVATE KEY" not in proc.stderr, name
