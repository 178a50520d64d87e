"""EncryIPClient speaks encryip.v1, v2 gRPC and v2 REST, chosen by URL, against a real
server; v2_ciphertexts decodes every form of a v2 BYTES output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server.conftest import Certs, free_port, running_server, sample_inputs
from server.test_encryip_service import plain_labels

from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime.client import (
    EncryIPClient,
    Endpoint,
    RemoteError,
    decrypt_batch,
    parse_endpoint,
    v2_ciphertexts,
)
from encryip_runtime.exceptions import EncodingError
from encryip_runtime.server.app import EncryIPServer
from encryip_runtime.server.tensors import pack_bytes_elements


@pytest.fixture(scope="module")
def served(tiny_release: Any) -> Iterator[tuple[EncryIPServer, Any]]:
    with running_server(tiny_release.licensee_dir("acme"), http_port=free_port()) as server:
        yield server, tiny_release


def urls(server: EncryIPServer) -> list[tuple[str, str | None]]:
    g, h = f"127.0.0.1:{server.port}", f"127.0.0.1:{server.http_port}"
    return [(g, None), (f"grpc://{g}", None), (f"grpc://{g}", "v2"), (f"http://{h}", None)]


def test_every_url_form_predicts_and_decrypts(served: tuple[EncryIPServer, Any]) -> None:
    server, release = served
    x = sample_inputs(9, seed=21)
    want = plain_labels(release, "acme", x)
    infos = []
    for url, protocol in urls(server):
        with EncryIPClient(url, protocol=protocol) as client:
            assert client.protocol == (
                protocol or ("v2" if url.startswith("http") else "encryip.v1")
            )
            key = client.load_key(release.key("acme"))
            infos.append(client.info())
            pred = client.predict(x)
            assert len(pred) == 9 and pred.model_name == "encryip"
            assert all(len(c) == client.info().ciphertext_size for c in pred)
            np.testing.assert_array_equal(decrypt_batch(pred, key), want, err_msg=url)
            np.testing.assert_array_equal(decrypt_batch(client.predict(x[0]), key), want[:1])
            if release.profile == "paper":
                one = client.predict(x[:2], onehot=True).onehot
                assert one is not None and one.shape == (2, client.info().onehot_size)
            assert client.health() == "SERVING"
    assert all(i == infos[0] for i in infos)  # REST's /encryip extension = GetModelInfo


def test_remote_errors_over_rest(served: tuple[EncryIPServer, Any]) -> None:
    server, _ = served
    with EncryIPClient(f"http://127.0.0.1:{server.http_port}", model_name="nope") as client:
        with pytest.raises(RemoteError) as err:
            client.info()
        assert err.value.code == "NOT_FOUND" and "unknown model 'nope'" in err.value.details
    with EncryIPClient(f"http://127.0.0.1:{server.http_port}") as client:
        with pytest.raises(RemoteError) as err:
            client.predict(sample_inputs(1).astype(np.float32))
        assert err.value.code == "INVALID_ARGUMENT" and "wrong dtype" in err.value.details
    with EncryIPClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(RemoteError) as err:
            client.info()
        assert err.value.code == "UNAVAILABLE"


def test_https_with_mtls_and_token(secure_release: Any, certs: Certs, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123")
    with running_server(
        secure_release.licensee_dir("acme"),
        http_port=free_port(),
        token_file=token,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
    ) as server:
        x = sample_inputs(3)
        want = plain_labels(secure_release, "acme", x)
        mtls = {
            "root_certificates": certs.ca.read_bytes(),
            "client_cert": certs.client_cert.read_bytes(),
            "client_key": certs.client_key.read_bytes(),
        }
        for url, protocol in ((f"https://127.0.0.1:{server.http_port}", None),
                              (f"grpcs://127.0.0.1:{server.port}", "v2")):  # fmt: skip
            with EncryIPClient(url, token="tok-123", protocol=protocol, **mtls) as client:
                key = client.load_key(secure_release.key("acme"))
                np.testing.assert_array_equal(decrypt_batch(client.predict(x), key), want)
            with EncryIPClient(url, token="wrong", protocol=protocol, **mtls) as client:
                with pytest.raises(RemoteError) as err:
                    client.predict(x)
                assert err.value.code == "UNAUTHENTICATED"


def test_parse_endpoint() -> None:
    assert parse_endpoint("h:1") == Endpoint("grpc", "h:1", None)
    assert parse_endpoint("grpc://h:1") == Endpoint("grpc", "h:1", False)
    assert parse_endpoint("grpcs://h:1") == Endpoint("grpc", "h:1", True)
    assert parse_endpoint("http://h:8000/") == Endpoint("rest", "h:8000", False)
    assert parse_endpoint("HTTPS://[::1]:8000") == Endpoint("rest", "[::1]:8000", True)
    for bad in ("ftp://h:1", "h", "http://h:1/v2", "h:0", "grpc://:1"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
    with pytest.raises(ValueError, match="plaintext"):
        EncryIPClient("http://127.0.0.1:1", root_certificates=b"x")
    with pytest.raises(ValueError, match="only protocol 'v2'"):
        EncryIPClient("http://127.0.0.1:1", protocol="encryip.v1")


def test_v2_ciphertexts_decodes_every_form() -> None:
    cts = [bytes([i]) * 40 for i in range(3)]
    forms: list[Any] = [
        np.array(cts, dtype=object),  # tritonclient binary
        [c.hex() for c in cts],  # REST JSON data
        {"name": "ciphertext", "datatype": "BYTES", "shape": [3], "data": [c.hex() for c in cts]},
        pack_bytes_elements(cts),  # raw_output_contents / binary extension
        pb.ModelInferResponse.InferOutputTensor(
            name="ciphertext", contents=pb.InferTensorContents(bytes_contents=cts)
        ),
    ]
    for form in forms:
        assert v2_ciphertexts(form, width=40) == cts
    with pytest.raises(EncodingError, match="element 1: 3 bytes, a ciphertext has 40"):
        v2_ciphertexts([cts[0], b"abc"], width=40)
    with pytest.raises(EncodingError, match="not hex"):
        v2_ciphertexts(["zz"])
    with pytest.raises(EncodingError, match="FP32, not BYTES"):
        v2_ciphertexts({"name": "onehot", "datatype": "FP32", "data": [1.0]})
    with pytest.raises(EncodingError, match="truncated"):
        v2_ciphertexts(b"\x05\x00")
