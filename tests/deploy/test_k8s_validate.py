"""Every manifest and every rendered kustomize target validates offline, strictly,
against the Kubernetes OpenAPI schemas of several versions (kubernetes-validate)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .helpers import ALL_TARGETS, K8S, one

# 1.27: gRPC probes went GA; 1.30 and the newest schema the package ships.
VERSIONS = ("1.27.0", "1.30.0", kubernetes_validate.utils.latest_version())
# Custom resources: no schema in kubernetes-validate; checked in test_k8s_policy.py.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def listed_files(kustomization: Path) -> dict[str, list[Path]]:
    """Files a kustomization names, by role: resources (full objects) and the rest."""
    spec = yaml.safe_load(kustomization.read_text())
    here = kustomization.parent
    resources = [here / r for r in spec.get("resources", []) if (here / r).is_file()]
    others = [here / p["path"] for p in spec.get("patches", []) if "path" in p]
    for gen in spec.get("configMapGenerator", []):
        others += [here / e for e in gen.get("envs", [])]
    return {"resources": resources, "others": others}


def raw_manifests() -> list[Path]:
    return sorted({f for k in kustomization_files() for f in listed_files(k)["resources"]})


def validate(doc: dict[str, Any], version: str) -> None:
    if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
        return
    # Raises ValidationError, or SchemaNotFoundError for a kind/apiVersion the
    # version does not know (a beta API removed, a typo): both fail the test.
    kubernetes_validate.validate(doc, version, strict=True)


def test_every_yaml_file_is_used_by_a_kustomization() -> None:
    used = set(kustomization_files())
    for k in kustomization_files():
        files = listed_files(k)
        used |= set(files["resources"]) | set(files["others"])
    orphans = sorted(
        str(p.relative_to(K8S)) for p in K8S.rglob("*") if p.is_file() and p not in used
    )
    assert not orphans, f"files no kustomization uses: {orphans}"


def test_every_kustomize_target_is_tested() -> None:
    targets = {
        str(k.parent.relative_to(K8S))
        for k in kustomization_files()
        if yaml.safe_load(k.read_text())["kind"] == "Kustomization"
    }
    assert targets == set(ALL_TARGETS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", raw_manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_raw_manifest_validates(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_rendered_target_validates(
    rendered: dict[str, list[dict[str, Any]]], target: str, version: str
) -> None:
    assert rendered[target]
    for doc in rendered[target]:
        validate(doc, version)


def test_validator_rejects_an_unknown_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The strict mode really is strict: a misspelt field fails."""
    deployment = one(rendered["overlays/cpu"], "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)


@pytest.mark.parametrize("version", ("1.27.0", "1.33.0"))
def test_cli_validates_the_rendered_overlays(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, version: str
) -> None:
    """The command a CI pipeline would run: kubernetes-validate --strict on rendered YAML."""
    files = []
    for target in ("overlays/cpu", "overlays/gpu", "exporter"):
        f = tmp_path / (target.replace("/", "-") + ".yaml")
        f.write_text(yaml.safe_dump_all(rendered[target]))
        files.append(str(f))
    cli = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run(
        [str(cli), "--strict", "--kubernetes-version", version, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARN" not in out.stdout + out.stderr, out.stdout + out.stderr
