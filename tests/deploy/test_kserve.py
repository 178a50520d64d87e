"""deploy/kserve: the ServingRuntime, ClusterServingRuntime and InferenceService examples
validate against KServe's own CRD schemas (strictly: an unknown field fails, as the API
server's pruning would drop it), render with ``kubectl kustomize``, and keep what the
runtime needs: restricted security context, probes on the health port, resources, a
licensee's public directory from a PVC, settings the server knows.

The CRDs are read from ``../shared/reference/kserve-crds/`` next to the repository (or
``ENCRYIP_REFERENCE_DIR``): under ``CI=true`` their absence fails, elsewhere it skips.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from encryip_runtime.server.config import ENV_PREFIX, ServerConfig
from encryip_runtime.server.health import HEALTH_SERVICE_NAMES

from .helpers import DEPLOY, REPO, kustomize_dir

KSERVE = DEPLOY / "kserve"
TARGETS = (KSERVE, KSERVE / "cluster")
CRD_FILES = {
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}
K8S_VERSION = "1.30.0"


def reference_dir() -> Path:
    d = Path(os.environ.get("ENCRYIP_REFERENCE_DIR") or REPO.parent / "shared" / "reference")
    if not all((d / "kserve-crds" / f).is_file() for f in CRD_FILES.values()):
        reason = f"KServe CRDs not found under {d / 'kserve-crds'}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI must have them)")
        pytest.skip(reason)
    return d


def _strict(schema: Any) -> Any:
    """The CRD's structural schema, closed like the API server's pruning: an object with
    ``properties`` accepts no other field unless it says so."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    out = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.safe_load((reference_dir() / "kserve-crds" / name).read_text())
        assert crd["spec"]["names"]["kind"] == kind
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            api = f"{crd['spec']['group']}/{version['name']}"
            schema = _strict(version["schema"]["openAPIV3Schema"])
            out[(api, kind)] = jsonschema.Draft7Validator(schema)
    return out


def validate(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if doc["kind"] in CRD_FILES:
        assert key in _validators(), f"{key}: not a version the KServe CRDs serve"
        errors = sorted(_validators()[key].iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(
            f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in errors
        )
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def raw_files() -> list[Path]:
    return sorted(p for p in KSERVE.rglob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def rendered(target: Path) -> list[dict[str, Any]]:
    return kustomize_dir(target)


def docs_of(kind: str) -> list[dict[str, Any]]:
    out = [d for t in TARGETS for d in rendered(t) if d["kind"] == kind]
    assert out, f"no {kind} in deploy/kserve"
    return out


@pytest.mark.parametrize("path", raw_files(), ids=lambda p: str(p.relative_to(KSERVE)))
def test_raw_manifest_validates(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_rendered_target_validates(target: Path) -> None:
    docs = rendered(target)
    assert docs
    for doc in docs:
        validate(doc)


def test_every_file_is_rendered() -> None:
    names = {(d["kind"], d["metadata"]["name"]) for t in TARGETS for d in rendered(t)}
    for path in raw_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert (doc["kind"], doc["metadata"]["name"]) in names, f"{path} is in no target"


def test_validation_is_strict() -> None:
    """A misspelt field and a wrong type fail, as the API server would refuse or drop them."""
    (isvc, *_) = docs_of("InferenceService")
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["model"]["storageuri"] = "pvc://x/y"
    with pytest.raises(AssertionError, match="storageuri"):
        validate(bad)
    (runtime,) = docs_of("ServingRuntime")
    bad = copy.deepcopy(runtime)
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(AssertionError, match="containerPort"):
        validate(bad)


def test_cluster_runtime_is_the_same_runtime() -> None:
    (ns,) = docs_of("ServingRuntime")
    (cluster,) = docs_of("ClusterServingRuntime")
    assert cluster["spec"] == ns["spec"]
    assert cluster["metadata"]["name"] == ns["metadata"]["name"] == "encryip"
    assert "namespace" not in cluster["metadata"]


def _runtime_container() -> dict[str, Any]:
    (runtime,) = docs_of("ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    return dict(container)


def test_runtime_serves_v2_with_settings_the_server_knows() -> None:
    (runtime,) = docs_of("ServingRuntime")
    spec = runtime["spec"]
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"}
    assert spec["supportedModelFormats"][0]["name"] == "encryip"
    c = _runtime_container()
    assert c["image"].endswith("encryip-runtime:0.1.0")
    assert c["args"][0] == "/mnt/models" and "--model-name={{.Name}}" in c["args"]
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    env = {e["name"]: e for e in c["env"]}
    for name in env:
        assert name.startswith(ENV_PREFIX), name
        assert name[len(ENV_PREFIX) :].lower() in known, f"{name}: no such server setting"
    assert env["ENCRYIP_HTTP_PORT"]["value"] == str(c["ports"][0]["containerPort"])
    assert env["ENCRYIP_INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]["containerName"] == (
        "kserve-container"
    )
    assert c["ports"][0]["name"] == "http1"


def _restricted(sc: dict[str, Any]) -> None:
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"


def _probes(c: dict[str, Any]) -> None:
    health_port = 8081
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == health_port, probe
        assert c[probe]["grpc"]["service"] in HEALTH_SERVICE_NAMES, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]


def test_runtime_restricted_with_probes_and_writable_tmp() -> None:
    c = _runtime_container()
    _restricted(c["securityContext"])
    _probes(c)
    (runtime,) = docs_of("ServingRuntime")
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_inference_services_mount_a_licensee_public_dir_from_a_pvc() -> None:
    pvcs = {d["metadata"]["name"] for d in docs_of("PersistentVolumeClaim")}
    isvcs = docs_of("InferenceService")
    assert {i["spec"]["predictor"]["model"]["protocolVersion"] for i in isvcs} == {
        "v2",
        "grpc-v2",
    }
    for isvc in isvcs:
        pred = isvc["spec"]["predictor"]
        model = pred["model"]
        scheme, _, rest = model["storageUri"].partition("://")
        claim, _, subdir = rest.partition("/")
        assert scheme == "pvc" and claim in pvcs and subdir, model["storageUri"]
        assert "key" not in subdir and "vault" not in subdir
        assert model["runtime"] == "encryip" and model["modelFormat"]["name"] == "encryip"
        _restricted(model["securityContext"])
        _probes(model)
        pod = pred["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert pred["automountServiceAccountToken"] is False
        if model["protocolVersion"] == "grpc-v2":
            assert model["ports"] == [{"name": "h2c", "containerPort": 8001, "protocol": "TCP"}]


def test_no_secret_in_kserve_manifests() -> None:
    for target in TARGETS:
        for doc in rendered(target):
            assert doc["kind"] != "Secret"
            text = yaml.safe_dump(doc)
            assert "secretName" not in text and "vault" not in text.lower()
