"""`encryip keys add|rotate|list` on a real release, through the real console entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from encryip_runtime.cli.main import main
from encryip_runtime.formats import LicenseeKey, Vault
from encryip_runtime.pipeline import ProtectedModel


def _labels(key: LicenseeKey, wire: np.ndarray) -> np.ndarray:
    return key.scheme.decrypt_labels(key.sk, key.scheme.from_wire(wire))


def _class_inputs(release: Path, vault: Vault, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs whose base-model slot is a class slot, with the class they map to."""
    pm = ProtectedModel.load(release / "licensees" / vault.licensees[0].name)
    x = np.random.default_rng(3).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    base = np.asarray(vault.licensees[0].permutation)[np.argmax(pm.logits(x), axis=1)]
    slot_class = {s: c for c, s in enumerate(vault.class_slots or ())}
    keep = np.array([int(s) in slot_class for s in base])
    return x[keep], np.array([slot_class[int(s)] for s in base[keep]])


def test_keys_add_issues_working_key_without_touching_others(fresh_release, capsys) -> None:
    root = fresh_release.root
    before = {n: fresh_release.key(n).read_bytes() for n in fresh_release.licensees}
    assert main(["keys", "add", str(root), "umbrella", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    key_path = Path(out["key"])
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    assert {n: fresh_release.key(n).read_bytes() for n in fresh_release.licensees} == before
    vault = Vault.load(root / "vault.json")
    assert [r.name for r in vault.licensees][-1] == "umbrella"
    x, want = _class_inputs(root, vault)
    assert len(x) > 10
    pm = ProtectedModel.load(root / "licensees" / "umbrella")
    # The new variant carries its own weight fingerprint: the same function up to it.
    assert (_labels(LicenseeKey.load(key_path), pm.predict(x)) == want).mean() >= 0.9


def test_keys_rotate_revokes_old_keys(fresh_release, capsys) -> None:
    root = fresh_release.root
    old = LicenseeKey.load(fresh_release.key("acme"))
    model_before = (root / "licensees" / "acme" / "model.onnx").read_bytes()
    assert main(["keys", "rotate", str(root)]) == 0
    assert "rotated 3 keys" in capsys.readouterr().out
    assert (root / "licensees" / "acme" / "model.onnx").read_bytes() == model_before
    vault = Vault.load(root / "vault.json")
    x, want = _class_inputs(root, vault)
    wire = ProtectedModel.load(root / "licensees" / "acme").predict(x)
    new = LicenseeKey.load(fresh_release.key("acme"))
    assert np.array_equal(_labels(new, wire), want)
    assert (_labels(old, wire) == want).mean() < 0.5


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["keys", "add", "/nonexistent-release", "x"], "is not a directory"),
        (["keys", "add", "{root}", "bad name"], "'bad name'"),
        (["keys", "add", "{root}", "acme"], "duplicate licensee names: acme"),
    ],
)
def test_keys_bad_input_lists_problem(fresh_release, capsys, argv: list[str], needle: str) -> None:
    argv = [a.replace("{root}", str(fresh_release.root)) for a in argv]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_keys_rotate_refused_for_paper_profile(paper_release, tmp_path, capsys) -> None:
    import shutil

    root = tmp_path / "r"
    shutil.copytree(paper_release.root, root)
    assert main(["keys", "rotate", str(root)]) == 1
    assert "secure profile" in capsys.readouterr().err
