"""The arbitrator's vault (encryip-vault/1 + vault.npz)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.crypto.ristretto import L
from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats import Manifest, Vault, VaultArrays

from .corrupt import DELETE, Corruption, expect_format_error, plain_text, write_corrupted


def _bad_element(old: Any) -> Any:
    return 0 if isinstance(old, int) else "ec" + "ff" * 30 + "7f"


def _shift_scalar(old: Any, doc: dict[str, Any]) -> Any:
    if isinstance(old, int):
        n = int(doc["group"].split("=")[1].rstrip(")")) - 1
        return (old + 1) % n
    k = int.from_bytes(bytes.fromhex(old), "little")
    return ((k + 1) % L).to_bytes(32, "little").hex()


def _swap01(old: list[Any]) -> list[Any]:
    return [old[1], old[0], *old[2:]]


def _bump_label(old: list[int], doc: dict[str, Any]) -> list[int]:
    return [(old[0] + 1) % doc["num_classes"], *old[1:]]


def _first_class_slot(old: Any, doc: dict[str, Any]) -> Any:
    return doc["class_slots"][0]


CASES = [
    Corruption("format-missing", ("format",), DELETE, "format"),
    Corruption("format-key", ("format",), "encryip-key/1", "format"),
    Corruption("profile", ("profile",), "strong", "profile"),
    Corruption("group", ("group",), "curve25519", "group"),
    Corruption("k", ("num_classes",), "ten", "num_classes"),
    Corruption("names", ("class_names",), lambda v: v[:-2], "class_names"),
    Corruption("pk-h", ("pk", "h"), _bad_element, "pk.h"),
    Corruption("pk-missing", ("pk",), DELETE, "pk"),
    Corruption("t-missing", ("t",), DELETE, "t"),
    Corruption("t-wrong", ("t",), _shift_scalar, "t"),
    Corruption("t-type", ("t",), [1], "t"),
    Corruption("root-range", ("root_index",), 99, "root_index"),
    Corruption("root-negative", ("root_index",), -1, "root_index"),
    Corruption("root-type", ("root_index",), "0", "root_index"),
    Corruption("licensees-missing", ("licensees",), DELETE, "licensees"),
    Corruption("licensees-empty", ("licensees",), [], "licensees"),
    Corruption("licensees-type", ("licensees",), {"acme": 1}, "licensees"),
    Corruption("licensee-type", ("licensees", 0), "acme", "licensees[0]"),
    Corruption("licensee-name", ("licensees", 1, "name"), DELETE, "licensees[1].name"),
    Corruption("licensee-dup", ("licensees", 1, "name"), "acme", "licensees[1].name"),
    Corruption("licensee-sk-a", ("licensees", 0, "sk", "a"), "x", "licensees[0].sk.a"),
    Corruption("licensee-sk-b", ("licensees", 2, "sk", "b"), DELETE, "licensees[2].sk.b"),
    Corruption("licensee-sk-wrong", ("licensees", 1, "sk", "a"), _shift_scalar, "licensees[1].sk"),
    Corruption(
        "licensee-perm",
        ("licensees", 0, "permutation"),
        lambda v: [0] * len(v),
        "licensees[0].permutation",
    ),
    Corruption(
        "licensee-perm-short",
        ("licensees", 0, "permutation"),
        lambda v: v[:-1],
        "licensees[0].permutation",
    ),
    Corruption("messages-missing", ("messages",), DELETE, "messages"),
    Corruption("messages-short", ("messages",), lambda v: v[:-1], "messages"),
    Corruption("messages-element", ("messages", 1), _bad_element, "messages"),
    Corruption("messages-swapped", ("messages",), _swap01, "messages"),
    Corruption("class-cts-missing", ("class_ciphertexts",), DELETE, "class_ciphertexts"),
    Corruption("class-cts-short", ("class_ciphertexts",), lambda v: v[:-1], "class_ciphertexts"),
    Corruption("class-cts-swapped", ("class_ciphertexts",), _swap01, "class_ciphertexts"),
    Corruption("class-cts-element", ("class_ciphertexts", 0, 0), _bad_element, "class_ciphertexts"),
    Corruption(
        "trigger-cts-element", ("trigger_ciphertexts", 3, 1), _bad_element, "trigger_ciphertexts"
    ),
    Corruption("trigger-cts-missing", ("trigger_ciphertexts",), DELETE, "trigger_ciphertexts"),
    Corruption(
        "expected-labels",
        ("expected_trigger_labels", "globex"),
        _bump_label,
        "expected_trigger_labels.globex",
    ),
    Corruption(
        "expected-labels-short",
        ("expected_trigger_labels", "acme"),
        lambda v: v[:-1],
        "expected_trigger_labels.acme",
    ),
    Corruption(
        "expected-labels-type", ("expected_trigger_labels",), [1, 2], "expected_trigger_labels"
    ),
    Corruption("output-size", ("output_size",), lambda v: v + 1, "output_size"),
    Corruption("output-size-zero", ("output_size",), 0, "output_size"),
    Corruption("manifest-digest", ("manifest_digest",), "abc", "manifest_digest"),
    Corruption("model-sha", ("model_sha256",), 5, "model_sha256"),
    Corruption("arrays-missing", ("arrays",), DELETE, "arrays"),
    Corruption("arrays-file-missing", ("arrays", "file"), DELETE, "arrays.file"),
    Corruption("arrays-file-traversal", ("arrays", "file"), "../vault.npz", "arrays.file"),
    Corruption("arrays-file-abs", ("arrays", "file"), "/etc/passwd", "arrays.file"),
    Corruption("arrays-sha", ("arrays", "sha256"), "0" * 63, "arrays.sha256"),
    Corruption("class-slots-missing", ("class_slots",), DELETE, "class_slots", ("secure",)),
    Corruption("class-slots-short", ("class_slots",), lambda v: v[:-1], "class_slots", ("secure",)),
    Corruption("class-slot-range", ("class_slots", 0), 10_000, "class_slots[0]", ("secure",)),
    Corruption("trigger-slot-type", ("trigger_slots", 0), "3", "trigger_slots[0]", ("secure",)),
    Corruption(
        "trigger-slot-overlap",
        ("trigger_slots", 0),
        _first_class_slot,
        "trigger_slots",
        ("secure",),
    ),
]
PARAMS = [(p, c) for c in CASES for p in c.profiles]


@pytest.mark.parametrize(("profile", "case"), PARAMS, ids=[f"{p}-{c.id}" for p, c in PARAMS])
def test_corrupt_field_is_named(
    profile: str, case: Corruption, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    release = request.getfixturevalue(f"{profile}_release")
    src = release.paths.vault
    Vault.load(src)
    expect_format_error(Vault.load, write_corrupted(src, tmp_path, case), case.field)


def test_round_trip_and_cross_references(tiny_release: Any, tmp_path: Path) -> None:
    v = Vault.load(tiny_release.paths.vault)
    base = Manifest.load(tiny_release.root / "manifest.json")
    assert v.manifest_digest == base.digest
    assert v.model_sha256 == base.model_sha256
    assert v.pk == base.pk
    assert [r.name for r in v.licensees] == list(tiny_release.licensees)
    for r in v.licensees:
        v.scheme.check_key(v.pk, r.sk)
    fam = v.family()
    assert fam.root == v.licensees[v.root_index].sk
    # Eqn. 5 table: every pair of licensees disagrees on some trigger label
    table = v.expected_trigger_labels()
    names = list(table)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert (table[names[i]] != table[names[j]]).any()
    arrays = v.load_arrays(tiny_release.paths.vault)
    assert len(arrays.trigger_inputs) == v.num_triggers
    # save + load is lossless
    shutil.copy(tiny_release.root / "vault.npz", tmp_path / "vault.npz")
    v.save(tmp_path / "vault.json")
    again = Vault.load(tmp_path / "vault.json")
    assert again.to_json() == v.to_json()
    if v.profile == "secure":
        assert v.class_slots is not None and v.trigger_slots is not None
        assert sorted([*v.class_slots, *v.trigger_slots]) == list(range(v.output_size))


def test_vault_files_are_private(tiny_release: Any) -> None:
    for name in ("vault.json", "vault.npz"):
        assert (tiny_release.root / name).stat().st_mode & 0o777 == 0o600


def _copy_release_vault(src: Any, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("vault.json", "vault.npz"):
        shutil.copy(src.root / name, dst / name)
    return dst / "vault.json"


def test_arrays_digest_mismatch(secure_release: Any, tmp_path: Path) -> None:
    vpath = _copy_release_vault(secure_release, tmp_path)
    v = Vault.load(vpath)
    arrays = v.load_arrays(vpath)
    (tmp_path / "vault.npz").write_bytes(
        VaultArrays(
            arrays.trigger_inputs, arrays.probe_inputs, (arrays.probe_labels + 1) % 10
        ).to_npz_bytes()
    )
    with pytest.raises(FormatError, match=r"vault\.npz.*sha256 does not match"):
        v.load_arrays(vpath)


def test_arrays_file_missing(secure_release: Any, tmp_path: Path) -> None:
    vpath = _copy_release_vault(secure_release, tmp_path)
    (tmp_path / "vault.npz").unlink()
    with pytest.raises(FormatError, match=r"vault\.npz.*file not found"):
        Vault.load(vpath).load_arrays(vpath)


def _rewrite_arrays(vpath: Path, **arrays: np.ndarray) -> Vault:
    """Write a new vault.npz and re-point the vault's digest at it."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (vpath.parent / "vault.npz").write_bytes(buf.getvalue())
    import hashlib

    doc = json.loads(plain_text(vpath))
    doc["arrays"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    vpath.write_text(json.dumps(doc))
    return Vault.load(vpath)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("drop-probe-labels", "probe_labels"),
        ("trigger-dtype", "trigger_inputs"),
        ("trigger-rank", "trigger_inputs"),
        ("trigger-count", "trigger_inputs"),
        ("label-range", "probe_labels"),
        ("label-count", "probe_labels"),
    ],
)
def test_arrays_validated(secure_release: Any, tmp_path: Path, change: str, field: str) -> None:
    vpath = _copy_release_vault(secure_release, tmp_path)
    a = Vault.load(vpath).load_arrays(vpath)
    arrays = {
        "trigger_inputs": a.trigger_inputs,
        "probe_inputs": a.probe_inputs,
        "probe_labels": a.probe_labels,
    }
    if change == "drop-probe-labels":
        del arrays["probe_labels"]
    elif change == "trigger-dtype":
        arrays["trigger_inputs"] = a.trigger_inputs.astype(np.float32)
    elif change == "trigger-rank":
        arrays["trigger_inputs"] = a.trigger_inputs.reshape(len(a.trigger_inputs), -1)
    elif change == "trigger-count":
        arrays["trigger_inputs"] = a.trigger_inputs[:-1]
    elif change == "label-range":
        arrays["probe_labels"] = a.probe_labels + 10
    elif change == "label-count":
        arrays["probe_labels"] = a.probe_labels[:-1]
    v = _rewrite_arrays(vpath, **arrays)
    with pytest.raises(FormatError) as info:
        v.load_arrays(vpath)
    assert info.value.field == field
    assert "vault.npz" in str(info.value)


def test_arrays_not_an_npz(secure_release: Any, tmp_path: Path) -> None:
    vpath = _copy_release_vault(secure_release, tmp_path)
    (tmp_path / "vault.npz").write_bytes(b"PK\x03\x04 not really")
    doc = json.loads(plain_text(vpath))
    doc["arrays"]["sha256"] = ""
    vpath.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"not a valid \.npz"):
        Vault.load(vpath).load_arrays(vpath)
