"""The committed conformance vectors (vectors/*.json) hold for the Python SDK.

They are written by scripts/gen_vectors.py; the JavaScript SDK runs the same files
(tests/sdk_js). A vector is either a decryption (key, ciphertext -> label) or an input a
conforming SDK must refuse with a named error class.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime import exceptions
from encryip_runtime.client import decrypt_batch
from encryip_runtime.crypto.labels import HashLabelCodec
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "vectors").glob("*.json"))


def _key(doc: dict[str, Any], tmp: Path | None = None) -> LicenseeKey:
    """The real loader (LicenseeKey.load), on the document written to a file."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "key.json"
        path.write_text(json.dumps(doc))
        return LicenseeKey.load(path)


def _raises(error: str | None, fn: Any) -> None:
    if error is None:
        fn()
        return
    cls = getattr(exceptions, error)
    with pytest.raises(cls) as info:
        fn()
    assert type(info.value).__name__ == error


def test_vector_files_exist() -> None:
    assert FILES, "vectors/*.json missing: run scripts/gen_vectors.py"


@pytest.fixture(params=FILES, ids=lambda p: p.name)
def vectors(request: pytest.FixtureRequest) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(request.param).read_text())
    assert doc["format"] == "encryip-vectors/1"
    return doc


def test_keys_and_fingerprints(vectors: dict[str, Any]) -> None:
    for name, doc in vectors["keys"].items():
        assert _key(doc).pk_fingerprint == vectors["pk_fingerprints"][name]


def test_decryptions(vectors: dict[str, Any]) -> None:
    keys = {n: _key(d) for n, d in vectors["keys"].items()}
    kinds = {v["kind"].split()[0] for v in vectors["decrypt"]}
    assert {"class", "trigger"} <= kinds  # triggers decrypt to labels too, never an error
    for v in vectors["decrypt"]:
        got = decrypt_batch([bytes.fromhex(v["ciphertext"])], keys[v["key"]])
        assert int(got[0]) == v["label"], v


def test_triggers_differ_between_licensees(vectors: dict[str, Any]) -> None:
    by_key: dict[str, list[int]] = {}
    for v in vectors["decrypt"]:
        if v["kind"].startswith("trigger") and "wrong key" not in v["kind"]:
            by_key.setdefault(v["key"], []).append(v["label"])
    rows = list(by_key.values())
    assert len(rows) >= 2 and rows[0] != rows[1]


def test_invalid_keys(vectors: dict[str, Any]) -> None:
    assert len(vectors["invalid_keys"]) >= 10
    for v in vectors["invalid_keys"]:
        _raises(v["error"], lambda v=v: _key(v["key"]))


def test_invalid_ciphertexts(vectors: dict[str, Any]) -> None:
    keys = {n: _key(d) for n, d in vectors["keys"].items()}
    for v in vectors["invalid_ciphertexts"]:
        _raises(
            v["error"], lambda v=v: decrypt_batch([bytes.fromhex(v["ciphertext"])], keys[v["key"]])
        )


def test_key_against_manifest(vectors: dict[str, Any], tmp_path: Path) -> None:
    """A key belongs to a manifest iff their public-key fingerprints agree."""
    keys = {n: _key(d) for n, d in vectors["keys"].items()}
    for v in vectors["key_manifest"]:
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(vectors["manifests"][v["manifest"]]))
        same = Manifest.load(path).pk_fingerprint == keys[v["key"]].pk_fingerprint
        assert same == (v["error"] is None), v["why"]


def test_label_rules(vectors: dict[str, Any]) -> None:
    for v in vectors["label_rule"]:  # format 1
        m = np.frombuffer(bytes.fromhex(v["message"]), dtype=np.uint8).reshape(1, 32)
        assert int(HashLabelCodec(v["num_classes"]).labels_of(m)[0]) == v["label"]
    keys = {n: _key(d) for n, d in vectors["keys"].items()}
    for v in vectors.get("label_table", []):  # format 2
        m = np.frombuffer(bytes.fromhex(v["message"]), dtype=np.uint8).reshape(1, 32)
        assert int(keys[v["key"]].scheme.codec.labels_of(m)[0]) == v["label"], v["what"]


def test_every_format_version_has_vectors() -> None:
    assert [p.name for p in FILES] == ["secure-v1.json", "secure-v2.json"]


def test_generator_runs_and_verifies(tmp_path: Path) -> None:
    """The generator rebuilds a fresh set (new keys) and checks each vector as it writes."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_vectors.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == [p.name for p in FILES]
