"""verify-endpoint against live services on loopback: our server serving globex's variant,
KServe serving globex's leaked ONNX plain (v2 gRPC and REST) and an independent model,
a service that decrypts with globex's key, and endpoints that answer garbage or hang."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import Trained
from server.conftest import Certs, certs  # noqa: F401 (fixture)

from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pbg
from encryip_runtime.arbitrator.cli import main
from encryip_runtime.arbitrator.verify_endpoint import EndpointVerdict, verify_endpoint
from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats import LicenseeKey
from encryip_runtime.formats.vault import Vault
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.server.app import create_server
from encryip_runtime.server.config import ServerConfig

FAST = {"qps": 1000.0, "timeout_s": 10.0}
secure_only = pytest.mark.parametrize("trained", ["secure"], indirect=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _our_server(model_dir: Path) -> Iterator[tuple[int, int]]:
    """Our server on loopback: (gRPC port, REST port)."""
    cfg = ServerConfig(
        release_dir=model_dir, host="127.0.0.1", port=0, http_port=_free_port(), health_port=0,
        metrics_port=0, drain_seconds=1.0, max_queue_delay_ms=1.0,
    )  # fmt: skip
    server, port = create_server(cfg)
    server.start()
    try:
        yield port, server.http_port
    finally:
        server.stop(0.2)


class _V2(pbg.GRPCInferenceServiceServicer):
    """A hand-written v2 server: ``answer(x) -> ModelInferResponse``."""

    def __init__(self, answer: Callable[[np.ndarray], pb.ModelInferResponse]) -> None:
        self.answer = answer

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="suspect", version="0")

    def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        return pb.ModelMetadataResponse(name=request.name)

    def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.uint8)
        return self.answer(x.reshape([int(d) for d in request.inputs[0].shape]))


@contextlib.contextmanager
def _v2_server(answer: Callable[[np.ndarray], pb.ModelInferResponse]) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pbg.add_GRPCInferenceServiceServicer_to_server(_V2(answer), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


def _response(
    name: str, datatype: str, shape: list[int], kind: str, values: list[Any]
) -> pb.ModelInferResponse:
    """A v2 answer of model "m" with one output tensor, ``values`` in ``<kind>_contents``."""
    out = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
    getattr(out.contents, f"{kind}_contents").extend(values)
    return pb.ModelInferResponse(model_name="m", outputs=[out])


def _verify_v2(
    trained: Trained, answer: Callable[[np.ndarray], pb.ModelInferResponse]
) -> EndpointVerdict:
    """verify-endpoint against a hand-written v2 server of model "m" answering ``answer``."""
    with _v2_server(answer) as port:
        return verify_endpoint(f"grpc://127.0.0.1:{port}", trained.vault, model="m", **FAST)  # type: ignore[arg-type]


def _assert_names_globex(v: EndpointVerdict) -> None:
    assert v.owned and v.licensee == "globex" and v.p_value < 1e-6, v.summary


# ----------------------------------------------------------------------------- our server


@secure_only
def test_our_server_serving_globex_is_globex(trained: Trained) -> None:
    with _our_server(trained.paths.licensee_dir("globex")) as (port, _):
        v = verify_endpoint(f"grpc://127.0.0.1:{port}", trained.vault, **FAST)  # type: ignore[arg-type]
    print(f"ours/globex: p={v.p_value:.3g} log10p={v.log10_p_value} queries={v.queries_sent}")
    assert v.protocol == "encryip.v1" and v.answers == "confused-labels"
    assert v.owned and v.licensee == "globex" and v.attribution == "licensee", v.summary
    assert v.p_value < 1e-6 and v.exit_code == 0
    assert v.queries_sent <= 1000 and v.failed_queries == 0
    assert v.decision["trigger_hits"] == v.num_triggers
    assert v.decision["probe_accuracy"] > 0.5
    # every key decrypts the answers as it expects: the outputs cannot name the licensee
    assert {k["trigger_labels_as_its_key_expects"] for k in v.decision["per_key"]} == {
        v.num_triggers
    }
    # forced onto v2 gRPC (no manifest reported there): owned, deployment not named
    with _our_server(trained.paths.licensee_dir("globex")) as (port, _):
        model = ProtectedModel.load(trained.paths.licensee_dir("globex")).manifest.model_name
        v2 = verify_endpoint(
            f"grpc://127.0.0.1:{port}", trained.vault, model=model, protocol="v2", **FAST
        )  # type: ignore[arg-type]
    assert v2.protocol == "v2-grpc" and v2.answers == "confused-labels"
    assert v2.owned and v2.p_value < 1e-6 and v2.attribution == "owned-unnamed", v2.summary


@pytest.mark.parametrize("trained", ["paper"], indirect=True)
def test_paper_profile_confused_and_raw(trained: Trained) -> None:
    """Paper profile: 6-byte ciphertexts from our server; 3p raw outputs from a plain one."""
    with _our_server(trained.paths.licensee_dir("globex")) as (port, _):
        v = verify_endpoint(f"grpc://127.0.0.1:{port}", trained.vault, **FAST)  # type: ignore[arg-type]
    assert v.answers == "confused-labels" and v.profile == "paper"
    _assert_names_globex(v)
    from encryip_runtime.arbitrator.inputs import SuspectModel

    model = SuspectModel(trained.model("globex"))

    def answer(x: np.ndarray) -> pb.ModelInferResponse:
        logits = model.logits(x)[0]
        return _response("logits", "FP32", [1, len(logits)], "fp32", logits.tolist())

    v = _verify_v2(trained, answer)
    assert v.answers == "raw-outputs"
    _assert_names_globex(v)


@secure_only
def test_our_server_over_v2_and_cli_json_evidence(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    with _our_server(trained.paths.licensee_dir("globex")) as (port, _):
        rc = main(["verify-endpoint", f"127.0.0.1:{port}", "--vault", str(trained.root),
                   "--qps", "1000", "--probes", "20", "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["owned"] is True and doc["licensee"] == "globex"
    assert doc["probes_sent"] == 20 and len(doc["queries"]) == doc["num_triggers"] + 20
    q = doc["queries"][0]
    assert {"index", "kind", "item", "sent_unix", "seconds", "reading", "answer"} <= set(q)
    assert q["answer"][0]["datatype"] == "BYTES"
    assert doc["endpoint"]["metadata"]["model_info"]["profile"] == "secure"
    assert "encryip.v1.EncryIP" in doc["endpoint"]["metadata"]["reflection_services"]


@secure_only
def test_our_rest_server_serving_globex_is_globex(trained: Trained) -> None:
    """REST answers carry the ciphertexts as hex strings; the model metadata's parameters
    carry the manifest digest that names the deployment."""
    with _our_server(trained.paths.licensee_dir("globex")) as (_, http_port):
        name = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2", timeout=5).read()
        )["name"]
        assert name
        model = ProtectedModel.load(trained.paths.licensee_dir("globex")).manifest.model_name
        v = verify_endpoint(f"http://127.0.0.1:{http_port}", trained.vault, model=model, **FAST)  # type: ignore[arg-type]
    print(f"ours REST/globex: p={v.p_value:.3g} queries={v.queries_sent}")
    assert v.protocol == "v2-rest" and v.answers == "confused-labels"
    _assert_names_globex(v)


@secure_only
def test_deployment_from_before_a_rotation_still_owned(
    trained: Trained, release_copy: Path, tmp_path: Path
) -> None:
    """A licensee's copy served since before ``keys rotate``: the vault's older generation
    explains the answers."""
    import shutil

    from encryip_runtime.release import rotate_keys

    old = tmp_path / "globex-gen1"
    old.mkdir()
    for name in ("model.onnx", "manifest.json"):
        shutil.copy(release_copy / "licensees" / "globex" / name, old / name)
    rotate_keys(release_copy)
    with _our_server(old) as (port, _):
        v = verify_endpoint(f"grpc://127.0.0.1:{port}", release_copy, **FAST)  # type: ignore[arg-type]
    assert v.owned and v.p_value < 1e-6, v.summary
    assert v.decision["generation"] == 1 and v.decision["current_generation"] == 2
    assert any("before a rotation" in n for n in v.notes)
    # the release's manifests on disk are generation 2's: the old deployment is not named
    assert v.licensee is None and v.attribution == "owned-unnamed"


@secure_only
def test_tls_token_budget_and_rate(
    trained: Trained,
    certs: Certs,  # noqa: F811 (the fixture imported from tests/server)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """grpcs:// with --ca-cert and a licensee token; --max-queries caps the probes, --qps
    spaces the queries; without the token: exit 2 naming UNAUTHENTICATED."""
    from encryip_runtime.server.licensees import hash_token

    tokens = tmp_path / "tokens.json"
    doc = {"format": "encryip-tokens/1", "tokens": {hash_token("investigator"): "arbitrator"}}
    tokens.write_text(json.dumps(doc))
    token_file = tmp_path / "token"
    token_file.write_text("investigator\n")
    cfg = ServerConfig(
        release_dir=trained.paths.licensee_dir("globex"), host="127.0.0.1", port=0,
        http_port=0, health_port=0, metrics_port=0, drain_seconds=1.0, max_queue_delay_ms=1.0,
        tls_cert=certs.server_cert, tls_key=certs.server_key, tokens_file=tokens,
    )  # fmt: skip
    server, port = create_server(cfg)
    server.start()
    try:
        t = Vault.load(trained.vault).num_triggers
        base = ["verify-endpoint", f"grpcs://localhost:{port}", "--vault", str(trained.root),
                "--ca-cert", str(certs.ca), "--json"]  # fmt: skip
        rc = main([*base, "--token-file", str(token_file), "--max-queries", str(t + 6),
                   "--qps", "60"])  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        assert rc == 0 and doc["licensee"] == "globex"
        assert doc["queries_sent"] == t + 6 and doc["probes_sent"] == 6
        sent = sorted(q["sent_unix"] for q in doc["queries"])
        assert sent[-1] - sent[0] >= (len(sent) - 1) / 60 - 0.05  # paced at <= 60 per second
        usage = server.licensees.usage()["licensees"]  # type: ignore[union-attr]
        assert usage["arbitrator"]["rows"] == t + 6
        rc = main(base)
        assert rc == 2 and "UNAUTHENTICATED" in capsys.readouterr().err
        rc = main([*base, "--token-file", str(token_file), "--max-queries", str(t - 1)])
        assert rc == 2 and "below the vault's" in capsys.readouterr().err
    finally:
        server.stop(0.2)


@secure_only
def test_served_argmax_slot_indices_name_globex(trained: Trained) -> None:
    """A leaked ONNX behind a service that returns only the argmax output index."""
    from encryip_runtime.arbitrator.inputs import SuspectModel

    model = SuspectModel(trained.model("globex"))

    def answer(x: np.ndarray) -> pb.ModelInferResponse:
        slot = int(np.argmax(model.logits(x)[0]))
        return _response("class", "INT64", [1], "int64", [slot])

    v = _verify_v2(trained, answer)
    assert v.answers == "raw-outputs"
    _assert_names_globex(v)


# ----------------------------------------------------------------------------- plain labels


@secure_only
def test_service_decrypting_with_globex_key_is_globex(trained: Trained) -> None:
    pm = ProtectedModel.load(trained.paths.licensee_dir("globex"))
    key = LicenseeKey.load(trained.paths.key("globex"))
    names = list(trained.plan.class_names)

    def answer(x: np.ndarray) -> pb.ModelInferResponse:
        label = int(decrypt_batch([bytes(r) for r in pm.predict(x)], key)[0])
        return _response("label", "BYTES", [1], "bytes", [names[label].encode()])

    v = _verify_v2(trained, answer)
    print(f"labels/globex: p={v.p_value:.3g} queries={v.queries_sent}")
    assert v.protocol == "v2-grpc" and v.answers == "plain-labels"
    _assert_names_globex(v)


# ----------------------------------------------------------------------------- garbage


@secure_only
def test_garbage_answers_exit_2(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    def answer(x: np.ndarray) -> pb.ModelInferResponse:
        return _response("o", "BYTES", [1], "bytes", [b"\x00garbage" * 3])

    with _v2_server(answer) as port:
        rc = main(["verify-endpoint", f"grpc://127.0.0.1:{port}", "--vault", str(trained.root),
                   "--model", "m", "--qps", "1000"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "nothing this release could produce" in err, err


@secure_only
def test_hanging_endpoint_times_out_exit_2(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(x: np.ndarray) -> pb.ModelInferResponse:
        time.sleep(2.0)
        return pb.ModelInferResponse()

    with _v2_server(answer) as port:
        t0 = time.monotonic()
        rc = main(["verify-endpoint", f"grpc://127.0.0.1:{port}", "--vault", str(trained.root),
                   "--model", "m", "--qps", "1000", "--timeout", "0.2"])  # fmt: skip
        assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert rc == 2 and "DEADLINE_EXCEEDED" in err and "in a row failed" in err, err


@secure_only
def test_unreachable_and_non_json_rest_exit_2(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["verify-endpoint", f"http://127.0.0.1:{_free_port()}", "--vault",
               str(trained.root), "--model", "m"])  # fmt: skip
    assert rc == 2 and "cannot reach" in capsys.readouterr().err

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        rc = main(["verify-endpoint", f"http://127.0.0.1:{httpd.server_port}", "--vault",
                   str(trained.root), "--model", "m"])  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capsys.readouterr().err
    assert rc == 2 and "not JSON" in err, err


def test_bad_urls_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for url in ("ftp://h:1", "grpc://host", "http://h:1/v2/models/x"):
        rc = main(["verify-endpoint", url, "--vault", str(tmp_path)])
        assert rc == 2


# ----------------------------------------------------------------------------- KServe

KSERVE_MAIN = r"""
if __name__ == "__main__":
    import sys
    pairs = [a.split("=", 1) for a in sys.argv[1:] if a.startswith("serve:")]
    models = [OnnxModel(n[len("serve:"):], p, 1) for n, p in pairs]
    for m in models:
        m.load()
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ModelServer(enable_latency_logging=False).start(models)
"""


def _kserve_python() -> Path:
    from benchmarks.serving import kserve_python

    # scripts/bootstrap.sh builds bench-out/kserve-venv (so CI has it: there its absence
    # is a failure); elsewhere build it on request (ENCRYIP_BUILD_KSERVE_VENV=1, or
    # `python -m benchmarks.serving --kserve build`) or skip.
    mode = "build" if os.environ.get("ENCRYIP_BUILD_KSERVE_VENV") == "1" else "existing"
    py = kserve_python(mode)
    if py is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bench-out/kserve-venv missing: scripts/bootstrap.sh builds it")
        pytest.skip(
            "no bench-out/kserve-venv with kserve + onnxruntime (build it once: "
            "ENCRYIP_BUILD_KSERVE_VENV=1, or python -m benchmarks.serving --kserve build)"
        )
    return py


@pytest.fixture(scope="module")
def kserve(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[int, int, Trained]
]:  # fmt: skip
    """One KServe ModelServer serving globex's leaked file and an independent model."""
    from benchmarks.serving import KSERVE_SCRIPT

    py = _kserve_python()
    work = tmp_path_factory.mktemp("kserve")
    script = work / "kserve_models.py"
    script.write_text(KSERVE_SCRIPT.split('if __name__ == "__main__":')[0] + KSERVE_MAIN)
    grpc_port, http_port = _free_port(), _free_port()
    argv = [str(py), str(script), "--grpc_port", str(grpc_port), "--http_port", str(http_port),
            f"serve:leaked={trained.model('globex')}",
            f"serve:independent={trained.independent_plain}"]  # fmt: skip
    log = open(work / "kserve.log", "wb")  # noqa: SIM115 (closed below)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCRYIP_", "PYTHONPATH"))}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        end = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kserve exited: {(work / 'kserve.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/v2/models/independent/ready", timeout=2
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                pytest.fail(f"kserve not ready: {(work / 'kserve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield grpc_port, http_port, trained
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@secure_only
@pytest.mark.parametrize("flavour", ["grpc", "http"])
def test_kserve_serving_leaked_globex_file(kserve: tuple[int, int, Trained], flavour: str) -> None:
    grpc_port, http_port, trained = kserve
    port = grpc_port if flavour == "grpc" else http_port
    v = verify_endpoint(f"{flavour}://127.0.0.1:{port}", trained.vault, model="leaked", **FAST)  # type: ignore[arg-type]
    print(f"kserve leaked {flavour}: p={v.p_value:.3g} queries={v.queries_sent}")
    assert v.protocol == ("v2-grpc" if flavour == "grpc" else "v2-rest")
    assert v.answers == "raw-outputs"
    assert v.owned and v.licensee == "globex" and v.attribution == "licensee", v.summary
    assert v.p_value < 1e-6 and v.queries_sent <= 1000 and v.exit_code == 0


@secure_only
@pytest.mark.parametrize("flavour", ["grpc", "http"])
def test_kserve_serving_independent_model_not_claimed(
    kserve: tuple[int, int, Trained], flavour: str
) -> None:
    grpc_port, http_port, trained = kserve
    port = grpc_port if flavour == "grpc" else http_port
    url = f"{flavour}://127.0.0.1:{port}"
    v = verify_endpoint(url, trained.vault, model="independent", **FAST)  # type: ignore[arg-type]
    print(f"kserve independent {flavour}: p={v.p_value:.3g} queries={v.queries_sent}")
    assert v.answers == "raw-outputs"
    assert not v.owned and v.licensee is None and v.exit_code == 1, v.summary
    assert v.p_value >= 0.01


@secure_only
def test_kserve_missing_model_exit_2(
    kserve: tuple[int, int, Trained], capsys: pytest.CaptureFixture[str]
) -> None:
    grpc_port, _, trained = kserve
    rc = main(["verify-endpoint", f"grpc://127.0.0.1:{grpc_port}", "--vault", str(trained.root),
               "--model", "nope"])  # fmt: skip
    assert rc == 2 and "nope" in capsys.readouterr().err
