"""Key management without training: add a licensee, rotate every key."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.exceptions import EncryIPError, InvalidKeyError
from encryip_runtime.formats import LicenseeKey, Manifest, Vault
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.release import add_licensee, rotate_keys

from .conftest import make_selector_release
from .helpers import class_and_trigger_inputs, decrypt, inputs


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("profile", ["paper", "secure"])
def test_add_licensee(tmp_path: Path, profile: str) -> None:
    rel = make_selector_release(tmp_path / "rel", profile)
    before = _snapshot(rel.root)
    old_vault = Vault.load(rel.paths.vault)
    key_path = add_licensee(rel.root, "umbrella")
    assert key_path == rel.key("umbrella")
    assert key_path.stat().st_mode & 0o777 == 0o600
    after = _snapshot(rel.root)
    # everything that existed is untouched except the vault
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"vault.json"}
    assert set(after) - set(before) == {
        "keys/umbrella.key",
        "licensees/umbrella/model.onnx",
        "licensees/umbrella/manifest.json",
    }
    vault = Vault.load(rel.paths.vault)
    assert [r.name for r in vault.licensees] == [*rel.licensees, "umbrella"]
    assert vault.licensees[:3] == old_vault.licensees
    new = LicenseeKey.load(key_path)
    assert new.sk.b not in {r.sk.b for r in old_vault.licensees}
    # the new key decrypts what the served base model emits, like every old key
    base = ProtectedModel.load(rel.public_dir(tmp_path / "public"))
    own = ProtectedModel.load(rel.licensee_dir("umbrella"))
    x = inputs(base, 200, seed=5)
    if profile == "secure":
        x, truth, _ = class_and_trigger_inputs(vault, 200, seed=5)
        mask = truth >= 0
        assert mask.sum() > 30
        for name in (*rel.licensees, "umbrella"):
            np.testing.assert_array_equal(decrypt(base, rel.key(name), x)[mask], truth[mask])
        np.testing.assert_array_equal(decrypt(own, key_path, x)[mask], truth[mask])
    else:
        np.testing.assert_array_equal(decrypt(own, key_path, x), decrypt(base, key_path, x))
    # and it is told apart from every other licensee on the triggers (Eqn. 5)
    table = vault.expected_trigger_labels()
    for name in rel.licensees:
        assert (table["umbrella"] != table[name]).any()


@pytest.mark.parametrize("bad", ["acme", "", "../evil", "a b"])
def test_add_licensee_rejects_bad_names(fresh_release: Any, bad: str) -> None:
    before = _snapshot(fresh_release.root)
    with pytest.raises(ValueError):
        add_licensee(fresh_release.root, bad)
    assert _snapshot(fresh_release.root) == before


def test_rotate_keys(tmp_path: Path) -> None:
    rel = make_selector_release(tmp_path / "rel", "secure")
    onnx_before = {k: v for k, v in _snapshot(rel.root).items() if k.endswith(".onnx")}
    old_keys = {n: LicenseeKey.load(rel.key(n)) for n in rel.licensees}
    vault_before = Vault.load(rel.paths.vault)
    x, truth, _ = class_and_trigger_inputs(vault_before, 400, seed=9)
    mask = truth >= 0
    labels_before = {
        n: decrypt(ProtectedModel.load(rel.licensee_dir(n)), rel.key(n), x) for n in rel.licensees
    }

    paths = rotate_keys(rel.root)

    assert sorted(paths) == sorted(rel.key(n) for n in rel.licensees)
    after = _snapshot(rel.root)
    assert {k: v for k, v in after.items() if k.endswith(".onnx")} == onnx_before
    vault = Vault.load(rel.paths.vault)
    base_manifest = Manifest.load(rel.root / "manifest.json")
    assert vault.pk == base_manifest.pk != vault_before.pk
    assert vault.manifest_digest == base_manifest.digest
    assert vault.class_slots == vault_before.class_slots
    assert mask.sum() > 100
    for n in rel.licensees:
        served = ProtectedModel.load(rel.licensee_dir(n))
        new_key = LicenseeKey.load(rel.key(n))
        assert new_key.pk == vault.pk
        got = decrypt(served, rel.key(n), x)
        # new keys work on the licensee's own (unchanged) model
        np.testing.assert_array_equal(got[mask], truth[mask])
        np.testing.assert_array_equal(got[mask], labels_before[n][mask])
        # every old key: refused by the validity check, and chance-level on new outputs
        old = old_keys[n]
        with pytest.raises(InvalidKeyError):
            served.scheme.check_key(vault.pk, old.sk)
        wire = served.predict(x)
        fresh = served.scheme.from_wire(wire)
        old_labels = old.scheme.decrypt_labels(old.sk, fresh)
        new_labels = new_key.scheme.decrypt_labels(new_key.sk, fresh)
        np.testing.assert_array_equal(new_labels[mask], truth[mask])
        # chance is 1/K = 0.1; 400 rows give a standard deviation of 0.015
        agreement = (old_labels == new_labels).mean()
        assert agreement < 0.2, agreement
        assert len(set(old_labels.tolist())) >= 8  # spread over the classes, not stuck


def test_rotate_refuses_paper(paper_release: Any, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(paper_release.root, root)
    before = _snapshot(root)
    with pytest.raises(EncryIPError, match="secure profile"):
        rotate_keys(root)
    assert _snapshot(root) == before


def test_rotate_refuses_a_tampered_model(fresh_release: Any) -> None:
    model = fresh_release.root / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    with pytest.raises(EncryIPError, match="sha256"):
        rotate_keys(fresh_release.root)


def test_rotation_keeps_every_generation_for_the_arbitrator(tmp_path: Path) -> None:
    """A key, manifest or service of before a rotation is still attributed (issue 13.2)."""
    import json
    import shutil

    from encryip_runtime.arbitrator import verify_key
    from encryip_runtime.arbitrator.verify_labels import verify_labels
    from encryip_runtime.arbitrator.verify_onnx import verify_onnx

    rel = make_selector_release(tmp_path / "rel", "secure")
    leaked = tmp_path / "leaked-acme.key"
    shutil.copy(rel.key("acme"), leaked)
    old_manifest = tmp_path / "acme-manifest.json"
    shutil.copy(rel.licensee_dir("acme") / "manifest.json", old_manifest)
    gen1 = Vault.load(rel.paths.vault)
    observed = tmp_path / "observed.json"  # what a service on the old key answers
    observed.write_text(json.dumps(gen1.expected_trigger_labels()["acme"].tolist()))

    rotate_keys(rel.root)
    add_licensee(rel.root, "umbrella")
    rotate_keys(rel.root)

    vault = Vault.load(rel.paths.vault)
    assert [g.generation for g in vault.generations()] == [3, 2, 1]
    assert all(g.created for g in vault.generations())
    assert [r.name for r in vault.previous[0].licensees] == [*rel.licensees, "umbrella"]
    assert vault.previous[1].pk == gen1.pk and vault.previous[1].t == gen1.t
    assert vault.licensee("acme").added == gen1.licensee("acme").added

    v = verify_key(leaked, rel.paths.vault)
    assert (v.status, v.licensee, v.generation, v.current_generation) == ("issued", "acme", 1, 3)
    assert "generation 1" in v.summary
    v_new = verify_key(rel.key("acme"), rel.paths.vault)
    assert (v_new.status, v_new.licensee, v_new.generation) == ("issued", "acme", 3)

    lv = verify_labels(observed, rel.paths.vault)
    assert (lv.proven, lv.licensee, lv.generation) == (True, "acme", 1)
    assert len(lv.licensees) == 3 + 4 + 4  # every (licensee, generation) is a candidate

    ov = verify_onnx(
        rel.licensee_dir("acme") / "model.onnx", rel.paths.vault, manifest_path=old_manifest
    )
    assert ov.manifest_generation == 1 and ov.current_generation == 3
    acme = next(c for c in ov.candidates if c.name == "acme")
    assert acme.generations == (1, 2, 3) and acme.manifest_agrees


def test_keys_add_and_rotate_keep_weight_fingerprints(tmp_path: Path) -> None:
    """keys add issues a fingerprinted file; rotation keeps every file's fingerprint."""
    from tiny_release import make_tiny_release

    from encryip_runtime.arbitrator.verify_onnx import verify_onnx
    from encryip_runtime.attacks.repermute import repermute_variant

    rel = make_tiny_release(tmp_path / "rel", "secure")
    add_licensee(rel.root, "umbrella")
    rotate_keys(rel.root)
    vault = Vault.load(rel.paths.vault)
    seeds = {r.name: r.fingerprint_seed for r in vault.licensees}
    assert all(seeds.values()) and len(set(seeds.values())) == 4
    assert {r.name: r.fingerprint_seed for r in vault.previous[0].licensees} == seeds
    src = rel.licensee_dir("umbrella")
    model, _, _ = repermute_variant(
        (src / "model.onnx").read_bytes(), Manifest.load(src / "manifest.json"), hidden=True
    )
    (tmp_path / "leak.onnx").write_bytes(model)
    v = verify_onnx(tmp_path / "leak.onnx", rel.paths.vault)
    assert (v.licensee, v.attribution) == ("umbrella", "licensee"), v.summary
