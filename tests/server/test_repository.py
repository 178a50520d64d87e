"""Model repository ``DIR/<model>/<version>/``: several models at once, each with its own
keys; latest version served; broken models skipped; load/unload over gRPC and REST; an
unload under load drops no request of the other models."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tiny_release import TinyRelease, make_tiny_release

from encryip_runtime._generated.encryip.v1 import encryip_pb2, encryip_pb2_grpc
from encryip_runtime._generated.inference import grpc_predict_v2_pb2 as pb
from encryip_runtime._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from encryip_runtime.client import check_key_matches, decrypt_batch
from encryip_runtime.exceptions import InvalidKeyError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.server.config import ConfigError, ServerConfig
from encryip_runtime.server.model_store import is_repository

from .conftest import free_port, rpc_code, running_server, sample_inputs
from .test_encryip_service import plain_labels, tensor
from .test_rest import call, json_request

MODELS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyRelease]:
    """Three releases, three key families (three public keys)."""
    return {
        name: make_tiny_release(tmp_path_factory.mktemp(f"rel-{name}"), "secure", seed=i)
        for i, name in enumerate(MODELS)
    }


def place(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in ("model.onnx", "manifest.json"):
        shutil.copy(src / n, dest / n)
    return dest


def make_repo(root: Path, releases: dict[str, TinyRelease], broken: bool = True) -> Path:
    """alpha: versions 1 (acme) and 3 (globex, served); beta, gamma: version 1 (acme);
    broken: a manifest that is not JSON."""
    place(releases["alpha"].licensee_dir("acme"), root / "alpha" / "1")
    place(releases["alpha"].licensee_dir("globex"), root / "alpha" / "3")
    place(releases["beta"].licensee_dir("acme"), root / "beta" / "1")
    place(releases["gamma"].licensee_dir("acme"), root / "gamma" / "1")
    if broken:
        place(releases["gamma"].licensee_dir("acme"), root / "broken" / "1")
        (root / "broken" / "1" / "manifest.json").write_text("{not json")
    return root


def predict_v1(port: int, model: str, x: np.ndarray) -> tuple[list[bytes], str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = encryip_pb2_grpc.EncryIPStub(ch).Predict(
            encryip_pb2.PredictRequest(model_name=model, input=tensor(x)), timeout=30
        )
    return list(resp.ciphertexts), resp.manifest_digest


def test_three_models_each_with_its_own_keys(
    releases: dict[str, TinyRelease], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", releases)
    assert is_repository(repo) and not is_repository(releases["alpha"].licensee_dir("acme"))
    x = sample_inputs(6, seed=2)
    with running_server(repo, http_port=free_port(), metrics_port=free_port()) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        keys = {m: LicenseeKey.load(releases[m].key("acme")) for m in MODELS}
        for model in MODELS:
            rel = releases[model]
            licensee = "globex" if model == "alpha" else "acme"
            cts, digest = predict_v1(server.port, model, x)
            want = Manifest.load(rel.licensee_dir(licensee) / "manifest.json").digest
            assert digest == want, model  # alpha: the latest version (3) serves
            np.testing.assert_array_equal(
                decrypt_batch(cts, keys[model]), plain_labels(rel, licensee, x)
            )
            status, _, body = call(f"{base}/v2/models/{model}/infer", json_request(x))
            resp = json.loads(body)
            assert status == 200 and resp["model_version"] == ("3" if model == "alpha" else "1")
            rest_cts = [bytes.fromhex(h) for h in resp["outputs"][0]["data"]]
            np.testing.assert_array_equal(
                decrypt_batch(rest_cts, keys[model]), plain_labels(rel, licensee, x)
            )
            # Another model's key belongs to another public key: refused, not misread.
            other = keys[MODELS[(MODELS.index(model) + 1) % 3]]
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                info = encryip_pb2_grpc.EncryIPStub(ch).GetModelInfo(
                    encryip_pb2.GetModelInfoRequest(model_name=model), timeout=10
                )
            from encryip_runtime.client import ModelInfo

            with pytest.raises(InvalidKeyError):
                check_key_matches(other, ModelInfo.from_proto(info))
        # Versions: alpha serves 3 only; metadata says so; an older version is 404.
        assert json.loads(call(f"{base}/v2/models/alpha")[2])["versions"] == ["3"]
        assert call(f"{base}/v2/models/alpha/versions/1/ready")[0] == 404
        # The broken model is reported and skipped; the index lists everything.
        status, _, body = call(f"{base}/v2/repository/index", b"{}")
        index = {r["name"]: r for r in json.loads(body)}
        assert {k: index[k]["state"] for k in index} == {
            "alpha": "READY", "beta": "READY", "gamma": "READY", "broken": "UNAVAILABLE",
        }  # fmt: skip
        assert "manifest.json" in index["broken"]["reason"]
        assert call(f"{base}/v2/models/broken/ready")[0] == 404
        # A request naming no model is ambiguous here.
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                encryip_pb2_grpc.EncryIPStub(ch).Predict(
                    encryip_pb2.PredictRequest(input=tensor(x)), timeout=10
                )
            assert rpc_code(err.value) == grpc.StatusCode.INVALID_ARGUMENT
            assert "name one of" in err.value.details()  # type: ignore[attr-defined]
        # Per-model metrics.
        text = call(f"http://127.0.0.1:{server.metrics_port}/metrics")[2].decode()
        assert 'encryip_model_rows_total{model="beta",version="1"} 12.0' in text
        assert 'encryip_model_ready{model="alpha",version="3"} 1.0' in text


def test_load_unload_need_explicit_mode(releases: dict[str, TinyRelease], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", releases, broken=False)
    with running_server(repo, http_port=free_port()) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        status, _, body = call(f"{base}/v2/repository/models/beta/unload", b"")
        assert status == 400 and "--model-control explicit" in json.loads(body)["error"]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="beta"))
            assert rpc_code(err.value) == grpc.StatusCode.FAILED_PRECONDITION
            assert [m.name for m in stub.RepositoryIndex(pb.RepositoryIndexRequest()).models] == [
                "alpha", "beta", "gamma",
            ]  # fmt: skip
    with pytest.raises(ConfigError, match="needs a model repository"):
        ServerConfig(
            release_dir=releases["beta"].licensee_dir("acme"), model_control="explicit"
        ).validate()
    with pytest.raises(ConfigError, match="--model-name: not with a model repository"):
        ServerConfig(release_dir=repo, model_name="x").validate()
    tokens = tmp_path / "tokens.json"
    tokens.write_text("{}")
    with pytest.raises(ConfigError) as err:
        ServerConfig(release_dir=repo, model_control="explicit", tokens_file=tokens).validate()
    assert any("not with --tokens-file" in p for p in err.value.problems), err.value.problems


def test_unload_under_load_drops_nothing_of_the_others(
    releases: dict[str, TinyRelease], tmp_path: Path
) -> None:
    """Two clients keep alpha and beta busy (until the control steps are done; bounded
    to 3,000 requests each) while gamma is unloaded over gRPC, loaded back, and beta is
    reloaded with new files over REST. Every request of alpha and beta must succeed."""
    repo = make_repo(tmp_path / "repo", releases, broken=False)
    x = sample_inputs(4, seed=5)
    with running_server(repo, http_port=free_port(), model_control="explicit") as server:
        target = f"127.0.0.1:{server.port}"
        base = f"http://127.0.0.1:{server.http_port}"
        results: dict[str, list[str]] = {"alpha": [], "beta": [], "gamma": []}
        done = asyncio.Event()

        async def hammer(model: str) -> None:
            async with grpc.aio.insecure_channel(target) as ch:
                stub = encryip_pb2_grpc.EncryIPStub(ch)
                for _ in range(3000):
                    if done.is_set() and len(results[model]) >= 50:
                        break
                    try:
                        await stub.Predict(
                            encryip_pb2.PredictRequest(model_name=model, input=tensor(x)),
                            timeout=30,
                        )
                        results[model].append("OK")
                    except grpc.aio.AioRpcError as exc:
                        results[model].append(exc.code().name)

        def control() -> None:
            time.sleep(0.2)
            with grpc.insecure_channel(target) as ch:
                stub = pb_grpc.GRPCInferenceServiceStub(ch)
                stub.RepositoryModelUnload(
                    pb.RepositoryModelUnloadRequest(model_name="gamma"), timeout=30
                )
                index = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=5)
                assert [m.name for m in index.models] == ["alpha", "beta"]
                # Unloaded: unknown to the request path at once.
                with pytest.raises(grpc.RpcError) as err:
                    encryip_pb2_grpc.EncryIPStub(ch).Predict(
                        encryip_pb2.PredictRequest(model_name="gamma", input=tensor(x)),
                        timeout=5,
                    )
                assert rpc_code(err.value) == grpc.StatusCode.NOT_FOUND
                stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="gamma"))
            # beta gets new files (globex's variant); REST load reloads it in place.
            place(releases["beta"].licensee_dir("globex"), repo / "beta" / "1")
            assert call(f"{base}/v2/repository/models/beta/load", b"")[0] == 200

        async def main() -> None:
            async def controlled() -> None:
                try:
                    await asyncio.to_thread(control)
                finally:
                    done.set()

            await asyncio.gather(hammer("alpha"), hammer("beta"), hammer("gamma"), controlled())

        asyncio.run(main())
        assert set(results["alpha"]) == {"OK"} and set(results["beta"]) == {"OK"}
        assert len(results["alpha"]) >= 50 and len(results["beta"]) >= 50
        # gamma's own requests: answered, or refused cleanly once it is gone (never cut).
        assert set(results["gamma"]) <= {"OK", "NOT_FOUND", "UNAVAILABLE"}
        assert results["gamma"].count("OK") >= 1
        cts, digest = predict_v1(server.port, "beta", x)
        globex = releases["beta"].licensee_dir("globex")
        assert digest == Manifest.load(globex / "manifest.json").digest
        cts, _ = predict_v1(server.port, "gamma", x)
        key = LicenseeKey.load(releases["gamma"].key("acme"))
        np.testing.assert_array_equal(
            decrypt_batch(cts, key), plain_labels(releases["gamma"], "acme", x)
        )
        # Load of a directory that is not there: 404; of a broken one: 400, reported.
        assert call(f"{base}/v2/repository/models/nope/load", b"")[0] == 404
        (repo / "bad" / "1").mkdir(parents=True)
        status, _, body = call(f"{base}/v2/repository/models/bad/load", b"")
        assert status == 400 and "failed to load model 'bad'" in json.loads(body)["error"]
        index = json.loads(call(f"{base}/v2/repository/index", b"")[2])
        assert {r["name"]: r["state"] for r in index}["bad"] == "UNAVAILABLE"


def test_repository_with_no_loadable_model_refuses_to_start(
    releases: dict[str, TinyRelease], tmp_path: Path
) -> None:
    from encryip_runtime.exceptions import ModelError

    repo = tmp_path / "repo"
    place(releases["beta"].licensee_dir("acme"), repo / "only" / "1")
    (repo / "only" / "1" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="no model of the repository"), running_server(repo):
        pass


def test_reload_picks_up_a_new_version(releases: dict[str, TinyRelease], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    place(releases["alpha"].licensee_dir("acme"), repo / "alpha" / "1")
    place(releases["beta"].licensee_dir("acme"), repo / "beta" / "1")
    x = sample_inputs(3, seed=8)
    with running_server(repo) as server:
        assert server.repository.index()[0].version == "1"
        place(releases["alpha"].licensee_dir("globex"), repo / "alpha" / "2")
        (repo / "beta" / "1" / "model.onnx").write_bytes(b"broken now")
        assert server.reload() is False  # beta failed: it keeps its old model
        cts, digest = predict_v1(server.port, "alpha", x)
        globex = releases["alpha"].licensee_dir("globex") / "manifest.json"
        assert digest == Manifest.load(globex).digest
        assert [(r.name, r.version, r.state) for r in server.repository.index()] == [
            ("alpha", "2", "READY"), ("beta", "1", "READY"),
        ]  # fmt: skip
        cts, _ = predict_v1(server.port, "beta", x)
        key = LicenseeKey.load(releases["beta"].key("acme"))
        np.testing.assert_array_equal(
            decrypt_batch(cts, key), plain_labels(releases["beta"], "acme", x)
        )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model_control": "sometimes"}, "--model-control: must be one of none, explicit"),
        ({"cors_origin": "app.example"}, "--cors-origin: 'app.example' is not an origin"),
        ({"cors_origin": " , "}, "--cors-origin: no origin given"),
        ({"http_port": "8001"}, "--port/--http-port/--health-port/--metrics-port: must differ"),
        ({"http_port": "70000"}, "--http-port: must be in 0..65535"),
    ],
)
def test_rest_and_repository_settings_checked(
    releases: dict[str, TinyRelease], settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        ServerConfig.from_env({}, release_dir=releases["alpha"].licensee_dir("acme"), **settings)
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


TRITON_REPOSITORY_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th

grpc_url, http_url, npy = sys.argv[1:4]
x = np.load(npy)
out = {}
for name, mod, url in (("grpc", tg, grpc_url), ("http", th, http_url)):
    c = mod.InferenceServerClient(url=url)
    index = c.get_model_repository_index(**({"as_json": True} if name == "grpc" else {}))
    rows = index.get("models", []) if isinstance(index, dict) else index
    c.unload_model("beta")
    ready_after_unload = c.is_model_ready("beta")
    c.load_model("beta")
    inp = mod.InferInput("pixels", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    res = c.infer("beta", [inp], outputs=[mod.InferRequestedOutput("ciphertext")])
    out[name] = {
        "index": sorted((r["name"], r.get("state", "")) for r in rows),
        "ready_after_unload": ready_after_unload,
        "ready_after_load": c.is_model_ready("beta"),
        "cts": [bytes(v).hex() for v in res.as_numpy("ciphertext").reshape(-1)],
    }
print(json.dumps(out))
"""


def test_tritonclient_repository_api(
    releases: dict[str, TinyRelease], triton_python: Path, tmp_path: Path
) -> None:
    """tritonclient's get_model_repository_index / unload_model / load_model, over
    gRPC (Triton's messages) and REST, against a repository in explicit mode."""
    import subprocess

    repo = make_repo(tmp_path / "repo", releases, broken=False)
    x = sample_inputs(4, seed=12)
    np.save(tmp_path / "x.npy", x)
    with running_server(repo, http_port=free_port(), model_control="explicit") as server:
        proc = subprocess.run(
            [str(triton_python), "-c", TRITON_REPOSITORY_SCRIPT, f"127.0.0.1:{server.port}",
             f"127.0.0.1:{server.http_port}", str(tmp_path / "x.npy")],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    key = LicenseeKey.load(releases["beta"].key("acme"))
    for name in ("grpc", "http"):
        r = out[name]
        assert r["index"] == [["alpha", "READY"], ["beta", "READY"], ["gamma", "READY"]]
        assert (r["ready_after_unload"], r["ready_after_load"]) == (False, True)
        labels = decrypt_batch([bytes.fromhex(h) for h in r["cts"]], key)
        np.testing.assert_array_equal(labels, plain_labels(releases["beta"], "acme", x))
