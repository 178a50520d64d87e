"""Open Inference Protocol v2 over REST against a real server: JSON and binary tensors,
errors, auth, TLS/mTLS, CORS, limits, deadlines, drain, metrics; tritonclient.http and curl.

Responses are validated against the protocol's own OpenAPI schema (``oip_spec.py``).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.client import decrypt_batch
from encryip_runtime.exceptions import InputError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.server.app import EncryIPServer
from encryip_runtime.server.tensors import unpack_bytes_elements

from . import oip_spec
from .conftest import Certs, free_port, run_tritonclient, running_server, sample_inputs
from .test_encryip_service import plain_labels

HEADER = "Inference-Header-Content-Length"


def call(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    method: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def json_request(x: np.ndarray, **extra: Any) -> bytes:
    tensor = {"name": "pixels", "shape": list(x.shape), "datatype": "UINT8"}
    tensor["data"] = x.reshape(-1).tolist()
    return json.dumps({"inputs": [tensor], **extra}).encode()


def binary_request(x: np.ndarray, outputs_binary: bool = True) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(x).tobytes()
    head = {
        "inputs": [
            {
                "name": "pixels",
                "shape": list(x.shape),
                "datatype": "UINT8",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "ciphertext", "parameters": {"binary_data": outputs_binary}}],
    }
    header = json.dumps(head).encode()
    return header + raw, {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def served(tiny_release: Any) -> Iterator[tuple[EncryIPServer, Any, str]]:
    with running_server(
        tiny_release.licensee_dir("acme"), http_port=free_port(), metrics_port=free_port()
    ) as server:
        yield server, tiny_release, f"http://127.0.0.1:{server.http_port}"


def test_health_and_metadata_follow_the_spec(served: tuple[EncryIPServer, Any, str]) -> None:
    _server, release, base = served
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/encryip/ready",
        "/v2/models/encryip/versions/1/ready",
    ):
        status, _, body = call(base + path)
        assert (status, body) == (200, b""), path
    assert call(base + "/v2/models/encryip/versions/7/ready")[0] == 404
    assert call(base + "/v2/models/other/ready")[0] == 404
    status, headers, body = call(base + "/v2")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    meta = json.loads(body)
    oip_spec.validate(meta, "metadata_server_response")
    assert meta["name"] == "encryip" and "binary_tensor_data" in meta["extensions"]
    status, _, body = call(base + "/v2/models/encryip/versions/1")
    model = json.loads(body)
    oip_spec.validate(model, "metadata_model_response")
    assert model["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    assert model["outputs"][0] == {"name": "ciphertext", "datatype": "BYTES", "shape": [-1]}
    assert (len(model["outputs"]) == 2) == (release.profile == "paper")
    status, _, body = call(base + "/v2/models/nope")
    assert status == 404
    oip_spec.validate(json.loads(body), "metadata_model_error_response")


def test_infer_json_hex_ciphertexts_decrypt(served: tuple[EncryIPServer, Any, str]) -> None:
    _server, release, base = served
    x = sample_inputs(6, seed=3)
    status, _headers, body = call(
        base + "/v2/models/encryip/infer",
        json_request(x, id="r-1"),
        {"Content-Type": "application/json"},
    )
    assert status == 200, body
    resp = json.loads(body)
    oip_spec.validate(resp, "inference_response")
    assert (resp["model_name"], resp["model_version"], resp["id"]) == ("encryip", "1", "r-1")
    (out,) = resp["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("ciphertext", "BYTES", [6])
    key = LicenseeKey.load(release.key("acme"))
    cts = [bytes.fromhex(h) for h in out["data"]]
    assert all(len(c) == key.scheme.ciphertext_size for c in cts)
    np.testing.assert_array_equal(decrypt_batch(cts, key), plain_labels(release, "acme", x))
    # Nested JSON data (natural shape) is accepted too.
    nested = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 1, 8, 8],
                    "datatype": "UINT8",
                    "data": x[:1].tolist(),
                }
            ]
        }
    ).encode()
    assert call(base + "/v2/models/encryip/infer", nested)[0] == 200


def test_infer_binary_extension(served: tuple[EncryIPServer, Any, str]) -> None:
    _server, release, base = served
    x = sample_inputs(5, seed=4)
    body, headers = binary_request(x)
    status, rheaders, rbody = call(base + "/v2/models/encryip/versions/1/infer", body, headers)
    assert status == 200, rbody
    n = int(rheaders[HEADER])
    head = json.loads(rbody[:n])
    (out,) = head["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [5]
    assert out["parameters"]["binary_data_size"] == len(rbody) - n
    cts = unpack_bytes_elements(rbody[n:])
    key = LicenseeKey.load(release.key("acme"))
    np.testing.assert_array_equal(decrypt_batch(cts, key), plain_labels(release, "acme", x))
    # Binary input, JSON output: hex strings again, a plain JSON response.
    body, headers = binary_request(x, outputs_binary=False)
    status, rheaders, rbody = call(base + "/v2/models/encryip/infer", body, headers)
    assert status == 200 and HEADER not in rheaders
    oip_spec.validate(json.loads(rbody), "inference_response")


def test_paper_profile_onehot_output(served: tuple[EncryIPServer, Any, str]) -> None:
    _server, release, base = served
    x = sample_inputs(2, seed=5)
    body = json_request(x, outputs=[{"name": "ciphertext"}, {"name": "onehot"}])
    status, _, rbody = call(base + "/v2/models/encryip/infer", body)
    if release.profile != "paper":
        assert status == 400 and "unknown output 'onehot'" in json.loads(rbody)["error"]
        return
    resp = json.loads(rbody)
    oip_spec.validate(resp, "inference_response")
    onehot = resp["outputs"][1]
    assert onehot["datatype"] == "FP32" and onehot["shape"][0] == 2
    assert sum(onehot["data"]) == 6.0  # three one-hot blocks per row


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (b"{not json", {}, 400, "not JSON"),
        (b"[]", {}, 400, "JSON object"),
        (b'{"inputs": []}', {}, 400, "exactly 1 input"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [1]}]}',
            {},
            400,
            "unknown input 'x'",
        ),
        (
            b'{"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "UINT8",'
            b' "data": [1, 2]}]}',
            {},
            400,
            "has 2 values",
        ),
        (
            b'{"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32",'
            b' "data": [0.5]}]}',
            {},
            400,
            "values",
        ),
        (
            b'{"inputs": [{"name": "pixels", "shape": [1, 1, 2, 2], "datatype": "UINT8",'
            b' "data": [1, 2, 3, 4]}]}',
            {},
            400,
            "wrong shape",
        ),
        (
            b'{"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "UINT8",'
            b' "data": [' + b"300, " * 63 + b"1]}]}",
            {},
            400,
            "out of range",
        ),
        (
            b'{"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',
            {},
            400,
            "BYTES",
        ),
        (b"{}", {HEADER: "99"}, 400, HEADER),
        (b'{"inputs": []}xx', {HEADER: "14"}, 400, "exactly 1 input"),
    ],
)
def test_bad_requests_get_spec_errors(
    served: tuple[EncryIPServer, Any, str],
    body: bytes,
    headers: dict[str, str],
    status: int,
    needle: str,
) -> None:
    _, _, base = served
    got, _rheaders, rbody = call(base + "/v2/models/encryip/infer", body, headers)
    assert got == status, rbody
    err = json.loads(rbody)
    oip_spec.validate(err, "inference_error_response")
    assert needle in err["error"]


def test_routing_errors_and_metrics(served: tuple[EncryIPServer, Any, str]) -> None:
    server, _, base = served
    status, _headers, body = call(base + "/v2/models/encryip/infer")  # GET
    assert status == 405 and "error" in json.loads(body)
    status, _, body = call(base + "/v2/nothing/here")
    assert status == 404 and "error" in json.loads(body)
    status, _, body = call(base + "/v2/models/other/infer", json_request(sample_inputs(1)))
    assert status == 404 and "unknown model 'other'" in json.loads(body)["error"]
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        text = r.read().decode()
    assert 'encryip_requests_total{code="OK",method="REST/ModelInfer"}' in text
    assert 'encryip_requests_total{code="INVALID_ARGUMENT",method="REST/ModelInfer"}' in text


def test_limits_deadline_and_drain(secure_release: Any) -> None:
    d = secure_release.licensee_dir("acme")
    with running_server(d, http_port=free_port(), max_message_bytes=4096) as server:
        base = f"http://127.0.0.1:{server.http_port}/v2/models/encryip/infer"
        status, _, body = call(base, json_request(sample_inputs(64)))
        assert status == 413 and "larger than 4096" in json.loads(body)["error"]
        # A deadline of 1 us passes before any batch can answer: 504, the spec's error body.
        x = sample_inputs(4)
        status, _, body = call(base, json_request(x, parameters={"timeout": 1}))
        assert status == 504 and "deadline" in json.loads(body)["error"]
        assert call(base, json_request(x, parameters={"timeout": 30_000_000}))[0] == 200
        server.health.set_serving(False)
        server.predictor.begin_drain()
        assert call(base.replace("/models/encryip/infer", "/health/ready"))[0] == 400
        assert call(base.replace("/infer", "/ready"))[0] == 400
        status, _, body = call(base, json_request(x))
        assert status == 503 and "draining" in json.loads(body)["error"]


def test_token_tls_mtls_and_cors(secure_release: Any, certs: Certs, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    d = secure_release.licensee_dir("acme")
    with running_server(
        d,
        http_port=free_port(),
        token_file=token,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
        cors_origin="https://app.example",
    ) as server:
        base = f"https://127.0.0.1:{server.http_port}"
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        # No client certificate: the handshake fails (TLS 1.2) or the server drops the
        # connection right after it (TLS 1.3).
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            call(base + "/v2/health/live", context=ctx)
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        assert call(base + "/v2/health/ready", context=ctx)[0] == 200  # probes need no token
        infer = base + "/v2/models/encryip/infer"
        body = json_request(sample_inputs(2))
        status, _, rbody = call(infer, body, context=ctx)
        assert status == 401 and json.loads(rbody) == {"error": "missing bearer token"}
        status, _, rbody = call(infer, body, {"Authorization": "Bearer nope"}, context=ctx)
        assert status == 401 and json.loads(rbody) == {"error": "invalid bearer token"}
        status, _, _ = call(infer, body, {"Authorization": "Bearer s3cret"}, context=ctx)
        assert status == 200
        # CORS: the preflight needs no token; the allowed origin is echoed, others are not.
        pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        status, headers, _ = call(infer, None, pre, method="OPTIONS", context=ctx)
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        hdrs = {"Origin": "https://app.example", "Authorization": "Bearer s3cret"}
        status, headers, _ = call(infer, body, hdrs, context=ctx)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert HEADER in headers["Access-Control-Expose-Headers"]
        hdrs["Origin"] = "https://evil.example"
        status, headers, _ = call(infer, body, hdrs, context=ctx)
        assert "Access-Control-Allow-Origin" not in headers


def test_curl_json_and_binary(served: tuple[EncryIPServer, Any, str], tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    _, release, base = served
    x = sample_inputs(3, seed=9)
    (tmp_path / "req.json").write_bytes(json_request(x))
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{tmp_path / 'req.json'}",
            base + "/v2/models/encryip/infer",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    resp = json.loads(out)
    oip_spec.validate(resp, "inference_response")
    key = LicenseeKey.load(release.key("acme"))
    cts = [bytes.fromhex(h) for h in resp["outputs"][0]["data"]]
    np.testing.assert_array_equal(decrypt_batch(cts, key), plain_labels(release, "acme", x))
    body, headers = binary_request(x)
    (tmp_path / "req.bin").write_bytes(body)
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "-D",
            str(tmp_path / "h.txt"),
            "-H",
            f"{HEADER}: {headers[HEADER]}",
            "--data-binary",
            f"@{tmp_path / 'req.bin'}",
            base + "/v2/models/encryip/infer",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    n = next(
        int(line.split(":", 1)[1])
        for line in (tmp_path / "h.txt").read_text().splitlines()
        if line.lower().startswith(HEADER.lower())
    )
    cts = unpack_bytes_elements(proc.stdout[n:])
    np.testing.assert_array_equal(decrypt_batch(cts, key), plain_labels(release, "acme", x))


TRITON_HTTP_SCRIPT = r"""
meta = client.get_model_metadata("encryip")
out = {"meta": meta}
for binary in (True, False):
    inp = tc.InferInput("pixels", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    req_out = tc.InferRequestedOutput("ciphertext", binary_data=binary)
    result = client.infer("encryip", [inp], outputs=[req_out])
    cts = result.as_numpy("ciphertext").reshape(-1)
    out[str(binary)] = [bytes(c).hex() if binary else str(c) for c in cts]
# No outputs named: tritonclient asks for binary_data_output.
inp = tc.InferInput("pixels", list(x.shape), "UINT8")
inp.set_data_from_numpy(x)
out["default"] = [bytes(c).hex() for c in client.infer("encryip", [inp]).as_numpy("ciphertext")]
print(json.dumps(out))
"""


def test_tritonclient_http_infer_and_decrypt(
    served: tuple[EncryIPServer, Any, str], triton_python: Path, tmp_path: Path
) -> None:
    server, release, _ = served
    x = sample_inputs(7, seed=11)
    url = f"127.0.0.1:{server.http_port}"
    out = run_tritonclient(triton_python, "http", TRITON_HTTP_SCRIPT, url, x, tmp_path)
    assert out["meta"]["name"] == "encryip"
    key = LicenseeKey.load(release.key("acme"))
    want = plain_labels(release, "acme", x)
    for mode in ("True", "False", "default"):
        labels = decrypt_batch([bytes.fromhex(h) for h in out[mode]], key)
        np.testing.assert_array_equal(labels, want, err_msg=mode)


def test_http_status_table() -> None:
    """One table: every refusal has the HTTP status REST clients expect."""
    from encryip_runtime.exceptions import InferenceError
    from encryip_runtime.server import status as st

    cases = [
        (InputError("x"), 400),
        (st.UnknownModelError("x"), 404),
        (st.QueueFullError("x"), 429),
        (st.RequestTooLargeError("x"), 413),
        (st.DeadlineExpiredError("x"), 504),
        (st.NotReadyError("x"), 503),
        (st.UnauthenticatedError("x"), 401),
        (st.ModelControlError("x"), 400),
        (InferenceError("secret detail"), 500),
        (RuntimeError("secret detail"), 500),
    ]
    for exc, want in cases:
        got, _, message = st.http_status_for(exc)
        assert got == want, (exc, got)
        assert "secret detail" not in message  # internals never reach the client
