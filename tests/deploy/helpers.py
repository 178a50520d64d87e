"""Helpers for the deployment checks: the Dockerfiles and the kustomize targets, parsed.

Nothing here needs a Docker engine or a cluster: ``kubectl kustomize`` renders offline,
``kubernetes-validate`` carries the OpenAPI schemas, and the Dockerfiles are parsed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# The runtime's kustomize targets (apply -k); every one serves the same server.
RUNTIME_TARGETS = ("base", "overlays/cpu", "overlays/gpu", "overlays/cpu-pvc")
# Every directory with a kustomization.yaml of kind Kustomization (not Component).
ALL_TARGETS = (*RUNTIME_TARGETS, "exporter", "monitoring")


@dataclass
class Stage:
    """One build stage of a Dockerfile: its FROM line and its instructions."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]

    def exec_form(self, instruction: str) -> list[str]:
        """The last ENTRYPOINT/CMD of this stage, which must be in JSON (exec) form."""
        values = self.args(instruction)
        assert values, f"no {instruction}"
        parsed = json.loads(values[-1])
        assert isinstance(parsed, list), f"{instruction} is not in exec (JSON) form"
        return [str(x) for x in parsed]


@dataclass
class Dockerfile:
    path: Path
    build_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        """Substitute ${ARG} / $ARG with the ARG defaults declared before the first FROM."""
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.build_args.get(m.group(1) or m.group(2), m.group(0)),
            text,
        )


def parse_dockerfile(path: Path) -> Dockerfile:
    """A small Dockerfile parser: comments, line continuations, ARG, FROM ... AS, stages."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    assert not buf, f"{path}: dangling line continuation"

    build_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert instruction == "ARG", f"{path}: {instruction} before the first FROM"
            key, _, value = rest.partition("=")
            build_args[key] = value
        else:
            stages[-1].instructions.append((instruction, rest))
    return Dockerfile(path=path, build_args=build_args, stages=stages)


def kustomize(target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s/TARGET`, as documents."""
    return kustomize_dir(K8S / target, target)


def kustomize_dir(path: Path, target: str | None = None) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH`, as documents."""
    target = target or str(path)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (needed for `kubectl kustomize`)")
    out = subprocess.run(
        [kubectl, "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single document of this kind (and name)."""
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def runtime_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "encryip")


def runtime_config(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The ENCRYIP_* settings of the runtime ConfigMap (generated name has a hash suffix)."""
    maps = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("encryip-config")
    ]
    assert len(maps) == 1, f"expected one encryip-config ConfigMap, found {len(maps)}"
    return {k: str(v) for k, v in maps[0]["data"].items()}
