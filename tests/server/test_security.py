"""TLS, mTLS and bearer-token refusals on the main port (health stays open for probes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from encryip_runtime.client import EncryIPClient, RemoteError

from .conftest import Certs, running_server, sample_inputs


def test_tls(secure_release: Any, certs: Certs) -> None:
    d = secure_release.licensee_dir("acme")
    with running_server(d, tls_cert=certs.server_cert, tls_key=certs.server_key) as server:
        target = f"127.0.0.1:{server.port}"
        with EncryIPClient(target, root_certificates=certs.ca.read_bytes()) as client:
            assert len(client.predict(sample_inputs(2))) == 2
        with EncryIPClient(target, timeout=3) as plain, pytest.raises(RemoteError) as info:
            plain.info()  # plaintext against a TLS port
        assert info.value.code == "UNAVAILABLE"
        with (
            EncryIPClient(
                target, root_certificates=certs.other_ca.read_bytes(), timeout=3
            ) as wrong_ca,
            pytest.raises(RemoteError) as info,
        ):
            wrong_ca.info()  # server cert not signed by the CA the client trusts
        assert info.value.code == "UNAVAILABLE"


def test_mtls(secure_release: Any, certs: Certs) -> None:
    d = secure_release.licensee_dir("acme")
    with running_server(
        d, tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    ) as server:
        target = f"127.0.0.1:{server.port}"
        ca = certs.ca.read_bytes()
        with EncryIPClient(
            target,
            root_certificates=ca,
            client_cert=certs.client_cert.read_bytes(),
            client_key=certs.client_key.read_bytes(),
        ) as client:
            assert len(client.predict(sample_inputs(1))) == 1
        with EncryIPClient(target, root_certificates=ca, timeout=3) as anonymous:
            with pytest.raises(RemoteError) as info:
                anonymous.info()  # no client certificate
            assert info.value.code == "UNAVAILABLE"
        with (
            EncryIPClient(
                target,
                root_certificates=ca,
                client_cert=certs.other_client_cert.read_bytes(),
                client_key=certs.other_client_key.read_bytes(),
                timeout=3,
            ) as intruder,
            pytest.raises(RemoteError) as info,
        ):
            intruder.info()  # client certificate from another CA
        assert info.value.code == "UNAVAILABLE"


def test_token(secure_release: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("correct-horse-battery\n")
    with running_server(
        secure_release.licensee_dir("acme"), token_file=token_file, allow_insecure_token=True
    ) as server:
        target = f"127.0.0.1:{server.port}"
        with EncryIPClient(target, token="correct-horse-battery") as client:
            assert len(client.predict(sample_inputs(1))) == 1
        for token, reason in ((None, "missing bearer token"), ("wrong", "invalid bearer token")):
            with EncryIPClient(target, token=token) as client:
                for call in (client.info, lambda: client.predict(sample_inputs(1))):
                    with pytest.raises(RemoteError) as info:
                        call()
                    assert info.value.code == "UNAUTHENTICATED"
                    assert info.value.details == reason
        # Health stays reachable without a token (Kubernetes probes).
        with grpc.insecure_channel(target) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
