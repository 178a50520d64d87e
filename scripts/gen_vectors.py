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

from encryip_runtime.client import decrypt_batch  # noqa: E402
from encryip_runtime.crypto.labels import HashLabelCodec  # noqa: E402
from encryip_runtime.crypto.profiles import make_scheme  # noqa: E402
from encryip_runtime.exceptions import EncryIPError  # noqa: E402
from encryip_runtime.formats.keyfile import LicenseeKey  # noqa: E402
from encryip_runtime.formats.manifest import Manifest  # noqa: E402
from encryip_runtime.formats.vault import Vault  # noqa: E402
from tests.tiny_release import make_tiny_release  # noqa: E402

VECTORS_FORMAT = "encryip-vectors/1"
# Every secure-profile format version the Python SDK reads.
FORMAT_VERSIONS = (1, 2)
L = 2**252 + 27742317777372353535851937790883648493
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


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets ``a.b.c`` (list indices as numbers) in a key document."""

    def f(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return f


def key_vectors(base: dict[str, Any], version: int) -> list[dict[str, Any]]:
    """Mutations of a valid key file and the error each must raise."""
    out: list[dict[str, Any]] = []

    def case(why: str, mutate: Callable[[dict[str, Any]], None], error: str) -> None:
        doc = copy.deepcopy(base)
        mutate(doc)
        _expect(why, error, lambda: _load_key_json(doc))
        out.append({"why": why, "key": doc, "error": error})

    a = base["sk"]["a"]
    k = base["num_classes"]
    case("sk.a uppercase hex", _set("sk.a", a.upper()), "FormatError")
    case("sk.a 31 bytes", _set("sk.a", a[:62]), "FormatError")
    case("sk.a not hex", _set("sk.a", "zz" + a[2:]), "FormatError")
    case("sk.a = L (not reduced)", _set("sk.a", L.to_bytes(32, "little").hex()), "FormatError")
    case("sk.a a number, not a string", _set("sk.a", 5), "FormatError")
    case("sk.a + 1: the key equation fails", _set("sk.a", _plus_one(a)), "InvalidKeyError")
    case("sk missing", lambda d: d.pop("sk"), "FormatError")
    for why, raw in BAD_ELEMENTS.items():
        case(f"pk.h {why}", _set("pk.h", raw.hex()), "FormatError")
    case("pk.h is the identity", _set("pk.h", "00" * 32), "FormatError")
    case("pk.h uppercase hex", _set("pk.h", base["pk"]["h"].upper()), "FormatError")
    case("pk_fingerprint does not match pk", _set("pk_fingerprint", "0" * 64), "FormatError")
    case("format unknown", _set("format", "encryip-key/99"), "FormatError")
    case("num_classes = 1", _set("num_classes", 1), "FormatError")
    if version == 1:
        b = base["sk"]["b"]
        case("sk.b + 1: g1^a * g2^b != h", _set("sk.b", _plus_one(b)), "InvalidKeyError")
        case("sk.a and sk.b swapped", lambda d: d["sk"].update(a=b, b=a), "InvalidKeyError")
        case("pk.g1 is not the base point", _set("pk.g1", base["pk"]["g2"]), "FormatError")
        case("pk.g2 is the identity", _set("pk.g2", "00" * 32), "FormatError")
        return out
    bs = base["sk"]["b"]
    case(
        "sk.b[0] changed: the key equation fails",
        _set("sk.b.0", (bs[0] + 1) % k),
        "InvalidKeyError",
    )
    case(f"sk.b[0] = K = {k} (b_i lie in [0, K))", _set("sk.b.0", k), "FormatError")
    case("sk.b[0] negative", _set("sk.b.0", -1), "FormatError")
    case("sk.b one entry short", lambda d: d["sk"]["b"].pop(), "FormatError")
    case("sk.b a hex scalar (format 1's form)", _set("sk.b", a), "FormatError")
    case("pk.g[0] is not the base point", _set("pk.g.0", base["pk"]["g"][1]), "FormatError")
    case("pk.g[1] is the identity", _set("pk.g.1", "00" * 32), "FormatError")
    case("pk.g[2] repeats pk.g[1]", _set("pk.g.2", base["pk"]["g"][1]), "FormatError")
    case("pk.g one generator short", lambda d: d["pk"]["g"].pop(), "FormatError")
    case("scheme.width does not match the key", _set("scheme.width", len(bs) + 1), "FormatError")
    case(
        "scheme.ciphertext_size is not (width + 2) x 32",
        _set("scheme.ciphertext_size", 96),
        "FormatError",
    )
    case("labels.index_min not a multiple of K", _set("labels.index_min", -1), "FormatError")
    case(
        "labels.m0 not canonical",
        _set("labels.m0", BAD_ELEMENTS["s = p (not reduced)"].hex()),
        "FormatError",
    )
    case("labels missing", lambda d: d.pop("labels"), "FormatError")
    return out


def _plus_one(scalar_hex: str) -> str:
    v = (int.from_bytes(bytes.fromhex(scalar_hex), "little") + 1) % L
    return v.to_bytes(32, "little").hex()


def ciphertext_vectors(
    keys: dict[str, LicenseeKey], manifest: Manifest, kinds: list[str]
) -> list[dict[str, Any]]:
    """Served-like ciphertexts (SampDist of every codebook entry) and what each key reads."""
    scheme = manifest.scheme
    assert manifest.codebook is not None
    wire = scheme.to_wire(scheme.sampdist(manifest.pk, manifest.codebook))
    out = []
    for name, key in keys.items():
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
    case(
        "96 + 32 bytes" if w != 128 else "160 bytes",
        good[:96] + good[:32] if w != 128 else good + good[:32],
    )
    case("empty", b"")
    for k in range(w // 32):
        for why, raw in list(BAD_ELEMENTS.items())[:3] if k else BAD_ELEMENTS.items():
            case(f"element {k}: {why}", good[: 32 * k] + raw + good[32 * (k + 1) :])
    return out


def label_rule_vectors() -> list[dict[str, Any]]:
    """Format 1: label(M) = SHA-256("encryip/v1/label" || M) big-endian mod K, at edge Ks."""
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
            label = int(codec.labels_of(m)[0])
            out.append(
                {"message": bytes(m[0]).hex(), "what": what, "num_classes": k, "label": label}
            )
    return out


def label_table_vectors(key: LicenseeKey) -> list[dict[str, Any]]:
    """Format 2: M_i = M_0 + i·h decodes to i mod K inside [index_min, index_max), and an
    element outside the table to SHA-256("encryip/v2/label" || M) mod K."""
    table = key.scheme.codec
    lo, hi, k = table.index_min, table.index_max, key.num_classes
    indices = {"index_min": lo, "-1": -1, "0": 0, "K - 1": k - 1, "K": k, "index_max - 1": hi - 1}
    outside = {"index_max (outside)": hi, "index_min - 1 (outside)": lo - 1}
    out = []
    for what, i in {**indices, **outside}.items():
        m = table.messages([i])
        out.append(
            {
                "key": key.licensee,
                "message": bytes(m[0]).hex(),
                "what": f"M_i, i = {what} = {i}",
                "label": int(table.labels_of(m)[0]),
            }
        )
    rnd = key.scheme.group.random_elements(1)
    out.append(
        {
            "key": key.licensee,
            "message": bytes(rnd[0]).hex(),
            "what": "a random element",
            "label": int(table.labels_of(rnd)[0]),
        }
    )
    return out


def generate(out_dir: Path, version: int) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        rel = make_tiny_release(
            Path(tmp) / "release", "secure", LICENSEES, num_classes=10, num_triggers=8,
            secure_format=version,
        )  # fmt: skip
        other = make_tiny_release(
            Path(tmp) / "other", "secure", ("mallory",), num_classes=10, num_triggers=4,
            secure_format=version,
        )  # fmt: skip
        key_docs = {n: json.loads(rel.key(n).read_text()) for n in LICENSEES}
        keys = {n: LicenseeKey.load(rel.key(n)) for n in LICENSEES}
        manifests = {
            "release": json.loads((rel.root / "manifest.json").read_text()),
            "other": json.loads((other.root / "manifest.json").read_text()),
        }
        manifest = Manifest.load(rel.root / "manifest.json")
        other_manifest = Manifest.load(other.root / "manifest.json")
        vault = Vault.load(rel.root / "vault.json")
        other_key = LicenseeKey.load(other.key("mallory"))
        other_doc = json.loads(other.key("mallory").read_text())

    decrypts = ciphertext_vectors(keys, manifest, vault_slot_kinds(vault, manifest))
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
    fingerprints = {"release": manifest.pk_fingerprint, "other": other_manifest.pk_fingerprint}
    key_manifest = [
        {"why": f"acme's key against the {m} release's manifest", "key": "acme", "manifest": m,
         "error": None if keys["acme"].pk_fingerprint == fp else "InvalidKeyError"}
        for m, fp in fingerprints.items()
    ]  # fmt: skip
    assert [v["error"] for v in key_manifest] == [None, "InvalidKeyError"]
    doc: dict[str, Any] = {
        "format": VECTORS_FORMAT,
        "profile": "secure",
        "key_format": key_docs["acme"]["format"],
        "manifest_format": manifests["release"]["format"],
        "generator": "scripts/gen_vectors.py",
        "num_classes": 10,
        "keys": {**key_docs, "mallory": other_doc},
        "manifests": manifests,
        "pk_fingerprints": {n: k.pk_fingerprint for n, k in {**keys, "mallory": other_key}.items()},
        "decrypt": decrypts + wrong_key,
        "invalid_keys": key_vectors(key_docs["acme"], version),
        "invalid_ciphertexts": bad_ciphertext_vectors(
            keys["acme"], bytes.fromhex(decrypts[0]["ciphertext"])
        ),
        "key_manifest": key_manifest,
        "label_rule": label_rule_vectors() if version == 1 else [],
        "label_table": label_table_vectors(keys["acme"]) if version == 2 else [],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"secure-v{version}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
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
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "vectors")
    args = ap.parse_args()
    for version in FORMAT_VERSIONS:
        print(generate(args.out, version))


if __name__ == "__main__":
    main()
