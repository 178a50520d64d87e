"""docs/deploy.md stays true: the files, targets and flags it names exist."""

from __future__ import annotations

import re

from encryip_runtime.server.config import ENV_PREFIX, ServerConfig

from .helpers import ALL_TARGETS, REPO

DOC = (REPO / "docs" / "deploy.md").read_text()


def test_named_deploy_paths_exist() -> None:
    paths = set(re.findall(r"(?<![\w/-])deploy/(?:k8s|kserve|Dockerfile|hadolint)[\w./-]*\w", DOC))
    assert paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docs/deploy.md names missing paths: {missing}"


def test_apply_targets_are_tested_targets() -> None:
    targets = re.findall(r"kubectl (?:apply|kustomize)(?: -k)? deploy/k8s/([\w./-]+)", DOC)
    assert targets
    assert set(targets) <= set(ALL_TARGETS)


def test_named_settings_are_server_flags() -> None:
    from encryip_runtime.crypto import r255_native

    fields = {f.upper() for f in ServerConfig.__dataclass_fields__}
    # Settings read outside ServerConfig: the crypto backend and SIMD switches, and the vault
    # passphrase of the commands that write or read the vault (never the server).
    from encryip_runtime.formats.vault_crypt import PASSPHRASE_ENV, VAULT_KEY_FILE_ENV

    fields.add(r255_native.ENV_VAR.removeprefix(ENV_PREFIX))
    fields.add(r255_native.SIMD_ENV_VAR.removeprefix(ENV_PREFIX))
    fields |= {PASSPHRASE_ENV.removeprefix(ENV_PREFIX), VAULT_KEY_FILE_ENV.removeprefix(ENV_PREFIX)}
    named = set(re.findall(rf"\b{ENV_PREFIX}([A-Z_]+)\b", DOC))
    assert named
    assert named <= fields, sorted(named - fields)
