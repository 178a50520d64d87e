#!/usr/bin/env python3
"""Write the conformance vectors (``vectors/``) from the Python implementation.

    python scripts/gen_vectors.py [--out vectors]

Every vector states what a conforming SDK must do with an input: decrypt it to a label,
or refuse it with a named error class (``EncodingError``, ``FormatError``,
``InvalidKeyError``, as in ``encryip_runtime.exceptions``). The script *verifies* each
vector against the Python SDK before writing it (a vector that Python does not honour
aborts the run), and ``tests/test_conformance_vectors.py`` checks the committed files
again. Any other language's SDK (``sdk/js``) runs the same files. The format of the
files is described in docs/design.md ("Conformance vectors").
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encryip_runtime.client import check_key_matches, decrypt_batch  # noqa: E402
from encryip_runtime.crypto.labels import HashLabelCodec  # noqa: E402
from encryip_runtime.exceptions import EncryIPError  # noqa: E402
from encryip_runtime.formats.keyfile import LicenseeKey  # noqa: E402
from encryip_runtime.formats.manifest import Manifest  # noqa: E402
from encryip_runtime.formats.vault import Vault  # noqa: E402
from tests.tiny_release import make_tiny_release  # noqa: E402

VECTORS_FORMAT = "encryip-vectors/1"
LICENSEES = ("acme", "globex", "initech")
# RFC 9496 §4.3.1 / A.2: encodings that every decoder must reject.
P = 2**255 - 19
BAD_ELEMENTS = {
    "top bit set (the canonical base point with bit 255 set)": bytes.fromhex(
        "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2df6"
    ),
    "s = p (not reduced)": P.to_bytes(32, "little"),
    "s = p + 2 (not reduced)": (P + 2).to_bytes(32, "little"),
    "s negative (odd: s = 1)": (1).to_bytes(32, "little"),
    "s = 2^255 - 1 (all ones below the top bit)": (2**255 - 1).to_bytes(32, "little"),
    "not a point (s = 2)": bytes.fromhex(
        "0200000000000000000000000000000000000000000000000000000000000000"
    ),
}


def _error_name(fn: Callable[[], Any]) -> str | None:
    try:
        fn()
    except EncryIPError as exc:
        return type(exc).__name__
    return None


def _load_key_json(doc: dict[str, Any]) -> LicenseeKey:
    """The real loader (LicenseeKey.load), on the document written to a file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "key.json"
        path.write_text(json.dumps(doc))
        return LicenseeKey.load(path)


def _expect(name: str, expected: str | None, fn: Callable[[], Any]) -> None:
    got = _error_name(fn)
    if got != expected:
        raise SystemExit(f"vector {name!r}: Python raised {got}, the vector says {expected}")


def key_vectors(keys: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Mutations of a valid key file and the error each must raise."""
    base = keys["acme"]
    out: list[dict[str, Any]] = []

    def case(why: str, mutate: Callable[[dict[str, Any]], None], error: str) -> None:
        doc = copy.deepcopy(base)
        mutate(doc)
        _expect(why, error, lambda: _load_key_json(doc))
        out.append({"why": why, "key": doc, "error": error})

    def set_(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def f(doc: dict[str, Any]) -> None:
            *parents, last = path.split(".")
            node = doc
            for p in parents:
                node = node[p]
            node[last] = value

        return f

    a = base["sk"]["a"]
    b = base["sk"]["b"]
    b_plus_one = (
        (
            (int.from_bytes(bytes.fromhex(b), "little") + 1)
            % (2**252 + 27742317777372353535851937790883648493)
        )
        .to_bytes(32, "little")
        .hex()
    )
    case("sk.b changed: g1^a * g2^b != h", set_("sk.b", b_plus_one), "InvalidKeyError")
    case("sk.a and sk.b swapped", lambda d: d["sk"].update(a=b, b=a), "InvalidKeyError")
    # case("sk.a uppercase hex", set_("sk.a", a.upper()), "FormatError")
    case("sk.a 31 bytes", set_("sk.a", a[:62]), "FormatError")
    case("sk.a not hex", set_("sk.a", "zz" + a[2:]), "FormatError")
    case(
        "sk.a = L (not reduced)",
        set_(
            "sk.a", (2**252 + 27742317777372353535851937790883648493).to_bytes(32, "little").hex()
        ),
        "FormatError",
    )
    case("sk.a a number, not a string", set_("sk.a", 5), "FormatError")
    case("sk missing", lambda d: d.pop("sk"), "FormatError")
    for why, raw in BAD_ELEMENTS.items():
        case(f"pk.h {why}", set_("pk.h", raw.hex()), "FormatError")
    case("pk.g1 is not the base point", set_("pk.g1", base["pk"]["g2"]), "FormatError")
    case("pk.g2 is the identity", set_("pk.g2", "00" * 32), "FormatError")
    case("pk.h is the identity", set_("pk.h", "00" * 32), "FormatError")
    # case("pk.h uppercase hex", set_("pk.h", base["pk"]["h"].upper()), "FormatError")
    case("pk_fingerprint does not match pk", set_("pk_fingerprint", "0" * 64), "FormatError")
    case("format unknown", set_("format", "encryip-key/99"), "FormatError")
    case("num_classes = 1", set_("num_classes", 1), "FormatError")
    return out


def ciphertext_vectors(
    release_keys: dict[str, LicenseeKey], manifest: Manifest, codebook_labels: dict[str, list[int]]
) -> list[dict[str, Any]]:
    """Served-like ciphertexts (SampDist of every codebook entry) and what each key reads."""
    scheme = manifest.scheme
    assert manifest.codebook is not None
    fresh = scheme.sampdist(manifest.pk, manifest.codebook)
    wire = scheme.to_wire(fresh)
    out = []
    kinds = codebook_labels["kind"]
    for name, key in release_keys.items():
        labels = decrypt_batch([bytes(r) for r in wire], key)
        for slot, (row, label) in enumerate(zip(wire, labels, strict=True)):
            out.append(
                {
                    "key": name,
                    "ciphertext": bytes(row).hex(),
                    "label": int(label),
                    "kind": kinds[slot],
                }
            )
    return out


def bad_ciphertext_vectors(key: LicenseeKey, good: bytes) -> list[dict[str, Any]]:
    out = []
    w = len(good)

    def case(why: str, data: bytes) -> None:
        _expect(why, "EncodingError", lambda: decrypt_batch([data], key))
        out.append(
            {"why": why, "key": key.licensee, "ciphertext": data.hex(), "error": "EncodingError"}
        )

    case(f"{w - 1} bytes", good[:-1])
    case(f"{w + 1} bytes", good + b"\x00")
    case("empty", b"")
    for k in range(w // 32):
        for why, raw in list(BAD_ELEMENTS.items())[:3] if k else BAD_ELEMENTS.items():
            case(f"element {k}: {why}", good[: 32 * k] + raw + good[32 * (k + 1) :])
    return out


def label_rule_vectors() -> list[dict[str, Any]]:
    """label(M) = SHA-256("encryip/v1/label" || M) big-endian mod K, at edge values of K."""
    from encryip_runtime.crypto.profiles import make_scheme

    g = make_scheme("secure", 10).group
    messages = {
        "identity": np.zeros((1, 32), dtype=np.uint8),
        "base point": g.generator(),
        "random element": g.random_elements(1),
    }
    out = []
    for k in (2, 3, 10, 256, 1000, 65000):
        codec = HashLabelCodec(k)
        for what, m in messages.items():
            out.append(
                {
                    "message": bytes(m[0]).hex(),
                    "what": what,
                    "num_classes": k,
                    "label": int(codec.labels_of(m)[0]),
                }
            )
    return out


def generate(out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        rel = make_tiny_release(
            Path(tmp) / "release", "secure", LICENSEES, num_classes=10, num_triggers=8
        )
        other = make_tiny_release(
            Path(tmp) / "other", "secure", ("mallory",), num_classes=10, num_triggers=4
        )
        key_docs = {n: json.loads(rel.key(n).read_text()) for n in LICENSEES}
        keys = {n: LicenseeKey.load(rel.key(n)) for n in LICENSEES}
        manifest_doc = json.loads((rel.root / "manifest.json").read_text())
        manifest = Manifest.load(rel.root / "manifest.json")
        vault = Vault.load(rel.root / "vault.json")
        other_key = LicenseeKey.load(other.key("mallory"))
        other_manifest_doc = json.loads((other.root / "manifest.json").read_text())

    slots = vault_slot_kinds(vault, manifest)
    decrypts = ciphertext_vectors(keys, manifest, {"kind": slots})
    good = bytes.fromhex(decrypts[0]["ciphertext"])
    wrong_key = [
        {
            **v,
            "key": "mallory",
            "label": int(decrypt_batch([bytes.fromhex(v["ciphertext"])], other_key)[0]),
            "kind": v["kind"] + " (wrong key)",
        }
        for v in decrypts
        if v["key"] == "acme"
    ]
    mismatch = []
    other_pk = tuple(other_manifest_doc["pk"][p] for p in ("g1", "g2", "h"))
    _expect(
        "key of another pk", "InvalidKeyError", lambda: check_key_matches(keys["acme"], other_pk)
    )
    mismatch.append(
        {
            "why": "acme's key against another release's manifest",
            "key": "acme",
            "manifest": "other",
            "error": "InvalidKeyError",
        }
    )
    mismatch.append(
        {
            "why": "acme's key against its own release's manifest",
            "key": "acme",
            "manifest": "release",
            "error": None,
        }
    )

    doc = {
        "format": VECTORS_FORMAT,
        "profile": "secure",
        "key_format": "encryip-key/1",
        "manifest_format": "encryip-manifest/1",
        "generator": "scripts/gen_vectors.py",
        "num_classes": 10,
        "keys": {**key_docs, "mallory": json.loads(json.dumps(other_key.to_json()))},
        "manifests": {"release": manifest_doc, "other": other_manifest_doc},
        "pk_fingerprints": {n: k.pk_fingerprint for n, k in {**keys, "mallory": other_key}.items()},
        "decrypt": decrypts + wrong_key,
        "invalid_keys": key_vectors(key_docs),
        "invalid_ciphertexts": bad_ciphertext_vectors(keys["acme"], good),
        "key_manifest": mismatch,
        "label_rule": label_rule_vectors(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "secure-v1.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def vault_slot_kinds(vault: Vault, manifest: Manifest) -> list[str]:
    """ "class <y>" or "trigger <t>" for each codebook slot of the base manifest."""
    assert manifest.codebook is not None
    kinds = ["?"] * len(manifest.codebook)
    for y, slot in enumerate(np.asarray(vault.class_slots).tolist()):
        kinds[int(slot)] = f"class {y}"
    for t, slot in enumerate(np.asarray(vault.trigger_slots).tolist()):
        kinds[int(slot)] = f"trigger {t}"
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "vectors")
    args = ap.parse_args()
    print(generate(args.out))


if __name__ == "__main__":
    main()
