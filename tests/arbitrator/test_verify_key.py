"""verify-key: every issued key, re-encoded keys, a derived key, foreign keys, bad files.

Keys need no trained model: the tiny random-weight releases of tests/conftest.py serve.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from tiny_release import TinyRelease, make_tiny_release

from encryip_runtime.arbitrator import verify_key
from encryip_runtime.arbitrator.cli import main
from encryip_runtime.formats.vault import Vault


def _key_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _sk_ints(release: TinyRelease, who: str) -> tuple[int, int]:
    rec = Vault.load(release.paths.vault).licensee(who)
    return rec.sk.a, rec.sk.b


def test_every_issued_key_is_named(tiny_release: TinyRelease) -> None:
    for who in tiny_release.licensees:
        v = verify_key(tiny_release.key(who), tiny_release.paths.vault)
        assert v.status == "issued" and v.licensee == who and v.exit_code == 0
        assert not v.re_encoded


def test_re_encoded_key_is_named(tiny_release: TinyRelease, tmp_path: Path) -> None:
    vault = Vault.load(tiny_release.paths.vault)
    n = vault.scheme.group.order
    a, b = _sk_ints(tiny_release, "globex")
    # decimal, unreduced, 0x big-endian hex, fields re-ordered, everything else dropped
    forms: list[dict[str, Any]] = [
        {"sk": {"b": hex(b + 2 * n), "a": str(a + 3 * n)}},
        {"a": a + n, "b": b},
        {"sk": {"a": str(a - n), "b": f"0X{b:x}"}},
    ]
    if vault.profile == "secure":  # the canonical LE hex, but not reduced mod L
        forms.append({"sk": {"a": (a + n).to_bytes(32, "little").hex(), "b": str(b)}})
    for i, doc in enumerate(forms):
        v = verify_key(_write(tmp_path / f"k{i}.json", doc), tiny_release.paths.vault)
        assert v.status == "issued" and v.licensee == "globex", (doc, v.summary)
        assert v.re_encoded


def test_claimed_licensee_field_is_not_trusted(tiny_release: TinyRelease, tmp_path: Path) -> None:
    doc = _key_doc(tiny_release.key("acme"))
    doc["licensee"] = "initech"
    v = verify_key(_write(tmp_path / "k.json", doc), tiny_release.paths.vault)
    assert v.licensee == "acme" and "not trusted" in v.summary


def _derived(release: TinyRelease) -> tuple[int, int]:
    """A key of the family, never issued, built from what colluders have."""
    vault = Vault.load(release.paths.vault)
    g, n = vault.scheme.group, vault.scheme.group.order
    a1, b1 = _sk_ints(release, "acme")
    if vault.profile == "secure":  # two colluding licensees: t = (a1 - a2) / (b2 - b1)
        a2, b2 = _sk_ints(release, "globex")
        t = (a1 - a2) * pow(b2 - b1, -1, n) % n
    else:  # paper: anyone, t = log_g1(g2) by table look-up
        t = int(g.log(vault.pk.g2)[0])
    issued = {r.sk.b for r in vault.licensees}
    b = next(x for x in (secrets.randbelow(n) for _ in range(1000)) if x not in issued)
    a = (a1 + (b1 - b) * t) % n
    vault.scheme.check_key(vault.pk, type(vault.licensees[0].sk)(a, b))
    return a, b


def test_derived_key_is_family_but_unattributed(tiny_release: TinyRelease, tmp_path: Path) -> None:
    a, b = _derived(tiny_release)
    doc = _key_doc(tiny_release.key("acme"))
    g = Vault.load(tiny_release.paths.vault).scheme.group
    doc["sk"] = {"a": g.scalar_to_json(a), "b": g.scalar_to_json(b)}
    v = verify_key(_write(tmp_path / "derived.key", doc), tiny_release.paths.vault)
    assert v.status == "derived" and v.licensee is None and v.exit_code == 1
    assert ("anyone" if tiny_release.profile == "paper" else "colluding") in v.summary


def _expected_for(release: TinyRelease, sk: dict[str, Any]) -> str:
    """foreign, unless the scalars happen to satisfy g1^a g2^b = h of this release: in the
    paper profile's tiny group that is a 1-in-n event, and such a key really is derived."""
    vault = Vault.load(release.paths.vault)
    g = vault.scheme.group
    key = type(vault.licensees[0].sk)(g.scalar_from_json(sk["a"]), g.scalar_from_json(sk["b"]))
    if any(r.sk == key for r in vault.licensees):  # paper: 1 in n^2 per licensee
        return "issued"
    try:
        vault.scheme.check_key(vault.pk, key)
    except Exception:
        return "foreign"
    return "derived"


def test_foreign_keys(tiny_release: TinyRelease, tmp_path: Path) -> None:
    other = make_tiny_release(tmp_path / "other", tiny_release.profile)
    v = verify_key(other.key("acme"), tiny_release.paths.vault)
    assert v.status == "foreign" and v.licensee is None and v.exit_code == 1
    assert "another release" in v.summary  # decided by its pk fingerprint
    # the same scalars without the pk fields: decided by the algebra alone
    bare = {"sk": _key_doc(other.key("acme"))["sk"]}
    v = verify_key(_write(tmp_path / "bare.json", bare), tiny_release.paths.vault)
    assert v.status == _expected_for(tiny_release, bare["sk"])
    # another scalar pair with this release's pk
    doc = _key_doc(tiny_release.key("acme"))
    doc["sk"]["a"] = _key_doc(other.key("globex"))["sk"]["a"]
    v = verify_key(_write(tmp_path / "mixed.json", doc), tiny_release.paths.vault)
    assert v.status == _expected_for(tiny_release, doc["sk"])


def test_secure_foreign_scalars(secure_release: TinyRelease, tmp_path: Path) -> None:
    """In ristretto255 a scalar pair of another release is never a key of this one."""
    other = make_tiny_release(tmp_path / "other", "secure")
    bare = {"sk": _key_doc(other.key("acme"))["sk"]}
    v = verify_key(_write(tmp_path / "bare.json", bare), secure_release.paths.vault)
    assert v.status == "foreign" and "g1^a * g2^b != h" in v.summary


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"sk": {"a": "12"}}',
        b'{"sk": {"a": "xyz", "b": "1"}}',
        b'{"sk": {"a": true, "b": 1}}',
        b'{"sk": {"a": [1], "b": 1}}',
        b"\xff\xfe",
    ],
)
def test_malformed_key_exit_2(
    secure_release: TinyRelease, tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "bad.key"
    p.write_bytes(content)
    rc = main(["verify-key", str(p), "--vault", str(secure_release.paths.vault)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error:" in err and "Traceback" not in err


def test_cli_json(secure_release: TinyRelease, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify-key", str(secure_release.key("initech")), "--vault",
               str(secure_release.root), "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["status"] == "issued" and doc["licensee"] == "initech"
    rc = main(["verify-key", str(secure_release.key("initech")), "--vault",
               str(secure_release.root / "missing.json")])  # fmt: skip
    assert rc == 2
