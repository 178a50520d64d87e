"""Licensee key files (encryip-key/1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime.crypto.ristretto import L
from encryip_runtime.exceptions import InvalidKeyError
from encryip_runtime.formats import LicenseeKey, Manifest
from encryip_runtime.formats.common import pk_fingerprint, pk_to_json

from .corrupt import DELETE, Corruption, apply, expect_format_error, write_corrupted


def _bad_scalar(old: Any) -> Any:
    return -1 if isinstance(old, int) else "zz" * 32


def _scalar_too_big(old: Any) -> Any:
    return 10_000 if isinstance(old, int) else L.to_bytes(32, "little").hex()


def _scalar_wrong_type(old: Any) -> Any:
    return str(old) if isinstance(old, int) else int(old[:8], 16)


def _flip(old: str) -> str:
    return ("1" if old[0] != "1" else "2") + old[1:]


CASES = [
    Corruption("format-missing", ("format",), DELETE, "format"),
    Corruption("format-manifest", ("format",), "encryip-manifest/1", "format"),
    Corruption("profile-unknown", ("profile",), "paper2", "profile"),
    Corruption("group-mismatch", ("group",), "ed25519", "group"),
    Corruption("k-missing", ("num_classes",), DELETE, "num_classes"),
    Corruption("k-type", ("num_classes",), [10], "num_classes"),
    Corruption("names-short", ("class_names",), lambda v: v[:3], "class_names"),
    Corruption("names-item", ("class_names", 0), None, "class_names[0]"),
    Corruption("licensee-missing", ("licensee",), DELETE, "licensee"),
    Corruption("licensee-type", ("licensee",), 42, "licensee"),
    Corruption("pk-missing", ("pk",), DELETE, "pk"),
    Corruption("pk-h-missing", ("pk", "h"), DELETE, "pk.h"),
    Corruption("pk-g2-type", ("pk", "g2"), [1], "pk.g2"),
    Corruption("fingerprint", ("pk_fingerprint",), _flip, "pk_fingerprint"),
    Corruption("digest-type", ("manifest_digest",), 12, "manifest_digest"),
    Corruption("digest-short", ("manifest_digest",), "abcdef", "manifest_digest"),
    Corruption("digest-upper", ("manifest_digest",), lambda v: v.upper(), "manifest_digest"),
    Corruption("sk-missing", ("sk",), DELETE, "sk"),
    Corruption("sk-type", ("sk",), "a,b", "sk"),
    Corruption("sk-a-missing", ("sk", "a"), DELETE, "sk.a"),
    Corruption("sk-a-bad", ("sk", "a"), _bad_scalar, "sk.a"),
    Corruption("sk-b-too-big", ("sk", "b"), _scalar_too_big, "sk.b"),
    Corruption("sk-b-type", ("sk", "b"), _scalar_wrong_type, "sk.b"),
    Corruption("sk-b-short", ("sk", "b"), lambda v: v if isinstance(v, int) else v[:62], "sk.b"),
]
PARAMS = [(p, c) for c in CASES for p in c.profiles]
# in the paper profile a truncated "b" is just the same int: only meaningful for secure
PARAMS = [(p, c) for p, c in PARAMS if not (p == "paper" and c.id == "sk-b-short")]


@pytest.mark.parametrize(("profile", "case"), PARAMS, ids=[f"{p}-{c.id}" for p, c in PARAMS])
def test_corrupt_field_is_named(
    profile: str, case: Corruption, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    release = request.getfixturevalue(f"{profile}_release")
    src = release.key("acme")
    LicenseeKey.load(src)
    expect_format_error(LicenseeKey.load, write_corrupted(src, tmp_path, case), case.field)


def _shift(old: Any, by: int = 1) -> Any:
    if isinstance(old, int):
        return old + by if old + by < 11 else old - by
    k = int.from_bytes(bytes.fromhex(old), "little")
    return ((k + by) % L).to_bytes(32, "little").hex()


@pytest.mark.parametrize("which", ["a", "b"])
def test_wrong_key_fails_at_the_boundary(tiny_release: Any, tmp_path: Path, which: str) -> None:
    src = tiny_release.key("acme")
    doc = json.loads(src.read_text())
    if tiny_release.profile == "paper":
        n = int(doc["group"].split("=")[1].rstrip(")")) - 1
        new = (doc["sk"][which] + 1) % n
    else:
        new = _shift(doc["sk"][which])
    path = tmp_path / "acme.key"
    path.write_text(json.dumps(apply(doc, ("sk", which), new)))
    with pytest.raises(InvalidKeyError) as info:
        LicenseeKey.load(path)
    assert str(path) in str(info.value) and "field 'sk'" in str(info.value)


def test_key_of_another_release_fails(secure_release: Any, tmp_path: Path) -> None:
    """Swap in another family's pk (with a consistent fingerprint): the sk no longer fits."""
    from tiny_release import make_tiny_release

    other = make_tiny_release(tmp_path / "other", "secure")
    theirs = Manifest.load(other.root / "manifest.json")
    doc = json.loads(secure_release.key("acme").read_text())
    doc["pk"] = pk_to_json(theirs.scheme, theirs.pk)
    doc["pk_fingerprint"] = pk_fingerprint(theirs.scheme, theirs.pk)
    path = Path(other.root) / "swapped.key"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidKeyError, match="does not match the public key"):
        LicenseeKey.load(path)


def test_round_trip_and_links(tiny_release: Any, tmp_path: Path) -> None:
    for name in tiny_release.licensees:
        key = LicenseeKey.load(tiny_release.key(name))
        assert key.licensee == name
        assert key.profile == tiny_release.profile
        lic_manifest = Manifest.load(tiny_release.licensee_dir(name) / "manifest.json")
        assert key.manifest_digest == lic_manifest.digest
        assert key.pk == lic_manifest.pk
        assert key.pk_fingerprint == lic_manifest.pk_fingerprint
        key.save(tmp_path / f"{name}.key")
        again = LicenseeKey.load(tmp_path / f"{name}.key")
        assert again.to_json() == key.to_json()
        assert again.sk == key.sk


def test_repr_never_shows_the_scalars(secure_release: Any) -> None:
    key = LicenseeKey.load(secure_release.key("acme"))
    text = repr(key)
    doc = json.loads(secure_release.key("acme").read_text())
    assert str(doc["sk"]["a"]) not in text and str(doc["sk"]["b"]) not in text
    assert "acme" in text


def test_key_files_are_private(tiny_release: Any) -> None:
    for name in tiny_release.licensees:
        assert tiny_release.key(name).stat().st_mode & 0o777 == 0o600
