"""The runtime refuses a directory with secret material by name, by content, or by link."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from server.conftest import make_config, runtime_copy

from encryip_runtime.exceptions import SecretMaterialError
from encryip_runtime.formats.secrets import find_secret_material, refuse_secret_material
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.server.app import create_server


def test_a_clean_licensee_directory_is_served(secure_release: Any, tmp_path: Path) -> None:
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "clean")
    (d / "README.json").write_text('{"note": "not a secret", "licensees": ["acme"]}')
    (d / "sub").mkdir()
    os.symlink(d / "manifest.json", d / "sub" / "link-inside.json")  # stays inside: fine
    assert find_secret_material(d) == []
    ProtectedModel.load(d).close()


@pytest.mark.parametrize(
    "renamed",
    [
        ("key", "acme.json"),  # a real key under an innocent name
        ("key", "notes/backup.txt"),
        ("vault", "vault.bak"),  # a vault copy, any name
        ("npz", "data/arrays.npz"),  # the vault's arrays
    ],
)
def test_secret_by_content_whatever_its_name(
    secure_release: Any, tmp_path: Path, renamed: tuple[str, str]
) -> None:
    """Defect: only names were checked; a key renamed acme.json and vault.bak were served."""
    kind, name = renamed
    source = {
        "key": secure_release.key("acme"),
        "vault": secure_release.root / "vault.json",
        "npz": secure_release.root / "vault.npz",
    }[kind]
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "served")
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, d / name)
    with pytest.raises(SecretMaterialError, match=r"whatever its name"):
        refuse_secret_material(d)
    with pytest.raises(SecretMaterialError, match="refusing to serve"):
        create_server(make_config(d))


def test_one_symlink_out_is_refused(secure_release: Any, tmp_path: Path) -> None:
    """A served directory is read as a whole: a link out of it (to anything) is refused."""
    d = runtime_copy(secure_release.licensee_dir("acme"), tmp_path / "served")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "harmless.txt").write_text("x")
    os.symlink(outside, d / "extra")
    with pytest.raises(SecretMaterialError, match="symlink out of the directory"):
        create_server(make_config(d))
    (d / "extra").unlink()
    os.symlink(secure_release.root / "manifest.json", d / "other-manifest.json")
    with pytest.raises(SecretMaterialError, match="symlink out"):
        ProtectedModel.load(d)
