"""Secure format v2 end to end: files, serving, the SDK, gRPC, key add/rotate, v1 -> v2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.client import EncryIPClient, decrypt_batch, load_key
from encryip_runtime.crypto.scheme_v2 import CSLiteV2
from encryip_runtime.exceptions import FormatError, InvalidKeyError
from encryip_runtime.formats import LicenseeKey, Manifest, Vault
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.release.keys import add_licensee, rotate_keys

from .conftest import LICENSEES, images_for_slots, make_selector_release
from .helpers import class_and_trigger_inputs


@pytest.fixture(scope="module")
def v2_release(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_selector_release(tmp_path_factory.mktemp("sel-v2"), "secure")


def test_files_are_format_v2(v2_release: Any) -> None:
    doc = json.loads((v2_release.root / "manifest.json").read_text())
    assert doc["format"] == "encryip-manifest/2"
    width = doc["scheme"]["width"]
    assert len(doc["pk"]["g"]) == width + 1
    assert doc["scheme"]["ciphertext_size"] == (width + 2) * 32
    assert all(len(row) == width + 2 for row in doc["codebook"])
    key = json.loads(v2_release.key("acme").read_text())
    assert key["format"] == "encryip-key/2"
    assert len(key["sk"]["b"]) == width and all(0 <= b < 10 for b in key["sk"]["b"])
    assert key["labels"]["index_min"] <= 0 < 10 <= key["labels"]["index_max"]
    vault = Vault.load(v2_release.paths.vault).to_json()  # sealed at rest
    assert vault["format"] == "encryip-vault/2"
    assert len(vault["triggers"]) == 8 and len(vault["trapdoor"]["t"]) == width


def test_every_licensee_decrypts_classes_and_its_own_trigger_labels(v2_release: Any) -> None:
    vault = Vault.load(v2_release.paths.vault)
    expected = vault.expected_trigger_labels()
    x, truth, trigger = class_and_trigger_inputs(vault, 60, seed=3)
    x = np.concatenate([x, images_for_slots(list(vault.trigger_slots or ()))])
    truth = np.concatenate([truth, -np.ones(8, dtype=np.int64)])
    trigger = np.concatenate([trigger, np.arange(8)])
    for name in LICENSEES:
        pm = ProtectedModel.load(v2_release.licensee_dir(name))
        key = load_key(v2_release.key(name))
        wire = pm.predict(x)
        assert wire.shape[1] == key.scheme.ciphertext_size
        labels = decrypt_batch([bytes(r) for r in wire], key)
        cls = truth >= 0
        np.testing.assert_array_equal(labels[cls], truth[cls])
        np.testing.assert_array_equal(labels[~cls], expected[name][trigger[~cls]])
        # the decrypted trigger elements are in the key holder's table, like classes
        assert isinstance(key.scheme, CSLiteV2)
        _, found = key.scheme.decrypt_indices(key.sk, pm.scheme.from_wire(wire))
        assert found.all()
        pm.close()


def test_grpc_serves_v2_and_the_sdk_checks_the_key(v2_release: Any, tmp_path: Path) -> None:
    from tests.server.conftest import running_server

    v1 = make_selector_release(tmp_path / "v1", "secure", secure_format=1)
    x = images_for_slots(np.arange(12) % 10)
    with (
        running_server(v2_release.licensee_dir("acme")) as server,
        EncryIPClient(f"127.0.0.1:{server.port}") as client,
    ):
        info = client.info()
        key = client.load_key(v2_release.key("acme"))
        assert info.ciphertext_size == key.scheme.ciphertext_size > 96
        pred = client.predict(x)
        pm = ProtectedModel.load(v2_release.licensee_dir("acme"))
        plain = key.scheme.decrypt_labels(key.sk, pm.transfer.phi_inv(pm.logits(x)))
        np.testing.assert_array_equal(decrypt_batch(pred, key), plain)
        with pytest.raises(InvalidKeyError, match="96-byte"):
            client.load_key(v1.key("acme"))


def test_v1_releases_still_load_serve_and_decrypt(tmp_path: Path) -> None:
    v1 = make_selector_release(tmp_path / "v1", "secure", secure_format=1)
    assert json.loads((v1.root / "manifest.json").read_text())["format"] == "encryip-manifest/1"
    vault = Vault.load(v1.paths.vault)
    assert vault.format_version == 1
    pm = ProtectedModel.load(v1.licensee_dir("acme"))
    key = LicenseeKey.load(v1.key("acme"))
    x = images_for_slots(list(vault.class_slots or ()))
    assert pm.predict(x).shape[1] == 96
    np.testing.assert_array_equal(
        decrypt_batch([bytes(r) for r in pm.predict(x)], key), np.arange(10)
    )


def test_add_and_rotate_v2_and_move_v1_to_v2(tmp_path: Path) -> None:
    rel = make_selector_release(tmp_path / "rel", "secure")
    add_licensee(rel.root, "umbrella")
    vault = Vault.load(rel.paths.vault)
    labels = vault.expected_trigger_labels()
    assert set(labels) == {*LICENSEES, "umbrella"}
    key = LicenseeKey.load(rel.key("umbrella"))
    assert key.format_version == 2
    rotate_keys(rel.root)
    new = Vault.load(rel.paths.vault)
    assert new.format_version == 2 and new.pk != vault.pk
    with pytest.raises(InvalidKeyError):
        load_key(rel.key("acme"), expected_pk=("00" * 32, "00" * 32, "00" * 32))

    old = make_selector_release(tmp_path / "old", "secure", secure_format=1)
    rotate_keys(old.root, secure_format=2)
    moved = Vault.load(old.paths.vault)
    assert moved.format_version == 2
    manifest = Manifest.load(old.root / "manifest.json")
    assert manifest.format_version == 2
    pm = ProtectedModel.load(old.licensee_dir("globex"))
    key = LicenseeKey.load(old.key("globex"))
    x = images_for_slots(list(moved.class_slots or ()))
    np.testing.assert_array_equal(
        decrypt_batch([bytes(r) for r in pm.predict(x)], key), np.arange(10)
    )


def _corrupt(src: Path, dst: Path, edit: Any) -> Path:
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


IDENTITY = "00" * 32


@pytest.mark.parametrize(
    ("what", "edit", "field"),
    [
        ("g-identity", lambda d: d["pk"]["g"].__setitem__(1, IDENTITY), "pk.g[1]"),
        ("g-short", lambda d: d["pk"]["g"].pop(), "pk.g"),
        ("g-upper", lambda d: d["pk"]["g"].__setitem__(1, d["pk"]["g"][1].upper()), "pk.g"),
        ("g1-not-base", lambda d: d["pk"]["g"].__setitem__(0, d["pk"]["g"][1]), "pk.g[0]"),
        ("h-identity", lambda d: d["pk"].__setitem__("h", IDENTITY), "pk.h"),
        ("width", lambda d: d["scheme"].__setitem__("width", 3), "scheme.ciphertext_size"),
        ("ct-size", lambda d: d["scheme"].__setitem__("ciphertext_size", 96), "ciphertext_size"),
        ("codebook-row", lambda d: d["codebook"][0].pop(), "codebook[0]"),
        ("no-scheme", lambda d: d.pop("scheme"), "format"),
    ],
)
def test_manifest_v2_corruptions_name_the_field(
    v2_release: Any, tmp_path: Path, what: str, edit: Any, field: str
) -> None:
    path = _corrupt(v2_release.root / "manifest.json", tmp_path / "manifest.json", edit)
    with pytest.raises(FormatError) as info:
        Manifest.load(path)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("what", "edit", "field"),
    [
        ("b-large", lambda d: d["sk"]["b"].__setitem__(0, 10), "sk.b"),
        ("b-short", lambda d: d["sk"]["b"].pop(), "sk.b"),
        ("m0-bad", lambda d: d["labels"].__setitem__("m0", "zz"), "labels.m0"),
        ("range-odd", lambda d: d["labels"].__setitem__("index_min", -3), "labels.index_min"),
        ("range-positive", lambda d: d["labels"].__setitem__("index_min", 10), "labels.index_min"),
    ],
)
def test_key_v2_corruptions_name_the_field(
    v2_release: Any, tmp_path: Path, what: str, edit: Any, field: str
) -> None:
    path = _corrupt(v2_release.key("acme"), tmp_path / "acme.key", edit)
    with pytest.raises(FormatError) as info:
        LicenseeKey.load(path)
    assert field in str(info.value)


def test_key_v2_with_another_b_fails_at_the_boundary(v2_release: Any, tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["sk"]["b"][0] = (d["sk"]["b"][0] + 1) % 10

    with pytest.raises(InvalidKeyError):
        LicenseeKey.load(_corrupt(v2_release.key("acme"), tmp_path / "k.key", edit))


def test_affine_mix_of_two_keys_is_derived_not_issued(v2_release: Any, tmp_path: Path) -> None:
    """Two colluders' keys mix into a working key (2 k1 - k2): verify-key calls it
    derived and names nobody; each issued key is still named."""
    from encryip_runtime.arbitrator.verify_key import verify_key
    from encryip_runtime.crypto.ristretto import L

    k1, k2 = (LicenseeKey.load(v2_release.key(n)) for n in ("acme", "globex"))
    assert isinstance(k1.sk.b, tuple) and isinstance(k2.sk.b, tuple)
    a = (2 * k1.sk.a - k2.sk.a) % L
    b = [2 * x - y for x, y in zip(k1.sk.b, k2.sk.b, strict=True)]
    doc = json.loads(v2_release.key("acme").read_text())
    doc["sk"] = {"a": a.to_bytes(32, "little").hex(), "b": b}
    doc.pop("licensee")
    path = tmp_path / "mix.key"
    path.write_text(json.dumps(doc))
    v = verify_key(path, v2_release.paths.vault)
    assert v.status == "derived" and v.licensee is None, v.summary
    assert verify_key(v2_release.key("globex"), v2_release.paths.vault).licensee == "globex"


def test_cli_decrypt_reads_v2_ciphertexts(v2_release: Any, capsys: Any) -> None:
    from encryip_runtime.cli.main import main

    pm = ProtectedModel.load(v2_release.licensee_dir("acme"))
    vault = Vault.load(v2_release.paths.vault)
    x = images_for_slots(list(vault.class_slots or ())[:3])
    hexes = [bytes(r).hex() for r in pm.predict(x)]
    rc = main(["decrypt", "--key", str(v2_release.key("acme")), "--ciphertext", *hexes, "--json"])
    assert rc == 0
    assert [r["label"] for r in json.loads(capsys.readouterr().out)] == [0, 1, 2]
    short = hexes[0][:192]  # a format 1 length
    assert main(["decrypt", "--key", str(v2_release.key("acme")), "--ciphertext", short]) == 2
    assert "96 bytes" in capsys.readouterr().err


def test_rerandomizer_pool_serves_v2(v2_release: Any) -> None:
    """The background pool's tuples (n + 2 columns, the shift merged into the last)."""
    vault = Vault.load(v2_release.paths.vault)
    pm = ProtectedModel.load(v2_release.licensee_dir("initech"), pool_capacity=64)
    key = LicenseeKey.load(v2_release.key("initech"))
    x = images_for_slots(np.asarray(vault.class_slots)[np.arange(40) % 10])
    wires = [pm.predict(x) for _ in range(3)]  # more than the pool holds: inline refill too
    pm.close()
    for w in wires:
        np.testing.assert_array_equal(decrypt_batch([bytes(r) for r in w], key), np.arange(40) % 10)
    assert not np.array_equal(wires[0], wires[1])
    assert vault.format_version == 2
