"""``verify-key``: whose is a leaked secret key? (paper §4.4, "secret key available")

The key file is read leniently, because a leaked key is rarely in its original form:
scalars as hex of the 32-byte little-endian encoding (canonical, secure), ``0x``-hex
integers, decimal strings or JSON integers, reduced or not mod the group order, with
or without the pk and the other fields. After normalising (a mod n, b mod n) the key
is compared with every issued key in constant time (``hmac.compare_digest``).

Three answers:

* **issued**: equal to licensee j's key -> j (exit 0);
* **derived**: ``g1^a g2^b = h`` but never issued: another key of the family
  (``a' + t b' = a1 + t b1``). Making one needs ``t``: the owner's vault, or two
  colluding licensees (t = (a1 - a2) / (b2 - b1)); in the paper profile anyone can
  (discrete logs in Z_p^* are a table look-up). The key alone names nobody (exit 1);
* **foreign**: it does not match this release's pk (exit 1).

After ``keys rotate`` the vault keeps every earlier key generation: the key is
compared with the keys of all of them, and the verdict says which generation
matched (a pre-rotation key is still ``issued``, to the same licensee).
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from encryip_runtime.arbitrator.errors import ArbitrationInputError
from encryip_runtime.arbitrator.inputs import load_vault
from encryip_runtime.crypto.profiles import PAPER, PROFILES, Profile, profile_of
from encryip_runtime.crypto.scheme import SecretKey
from encryip_runtime.crypto.scheme_v2 import CSLiteV2, PublicKeyV2, SecretKeyV2
from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats.common import pk_fingerprint
from encryip_runtime.formats.vault import Vault

__all__ = ["KeyVerdict", "parse_scalar", "read_leaked_key", "verify_key"]

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1 << 20


@dataclass(frozen=True)
class KeyVerdict:
    key: str
    vault: str
    profile: str
    status: str  # issued | derived | foreign
    licensee: str | None
    summary: str
    re_encoded: bool  # the key file's scalars were not in the canonical form
    key_licensee_field: str | None  # what the file itself claims (not trusted)
    #: the key generation that matched (1 = before any rotation); None when foreign
    generation: int | None = None
    current_generation: int = 1

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "issued" else 1

    def to_json(self) -> dict[str, Any]:
        return {"command": "verify-key", **asdict(self)}


def parse_scalar(value: Any, profile: str | Profile, where: str) -> tuple[int, bool]:
    """A scalar in any of the forms above -> (integer, was it in canonical form?)."""
    if isinstance(value, bool):
        raise ArbitrationInputError(f"{where}: expected a number, got a boolean")
    if isinstance(value, int):
        return value, profile_of(profile).integer_scalars
    if not isinstance(value, str):
        raise ArbitrationInputError(
            f"{where}: expected a number or a string, got {type(value).__name__}"
        )
    s = value.strip().replace("_", "")
    if not s or len(s) > 400:
        raise ArbitrationInputError(f"{where}: empty or overlong scalar")
    neg = s.startswith("-")
    body = s[1:] if neg else s
    try:
        if body.lower().startswith("0x"):
            v = int(body[2:], 16)
            canonical = False
        elif profile_of(profile).hex_scalars and len(body) == 64 and _is_hex(body):
            v = int.from_bytes(bytes.fromhex(body), "little")  # the format's own encoding
            canonical = not neg
        elif body.isdigit():
            v = int(body, 10)
            canonical = False
        else:
            raise ValueError
    except ValueError:
        raise ArbitrationInputError(
            f"{where}: {value[:80]!r} is not a scalar (expected 64 hex digits, 0x-hex or decimal)"
        ) from None
    return (-v if neg else v), canonical


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def read_leaked_key(
    path: Path, vault: Vault
) -> tuple[SecretKey | SecretKeyV2, bool, dict[str, Any]]:
    """(sk reduced mod the order, canonical?, the JSON document)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise ArbitrationInputError(f"{path}: too large to be a key file")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FormatError("file not found", path=str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"not a JSON key file ({exc})", path=str(path)) from None
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if not isinstance(doc, dict):
        raise FormatError("expected a JSON object", path=str(path))
    sk_obj = doc.get("sk", doc)
    if not isinstance(sk_obj, dict) or "a" not in sk_obj or "b" not in sk_obj:
        raise FormatError(
            "no secret key: expected 'sk': {'a': ..., 'b': ...}", path=str(path), field="sk"
        )
    profile = doc.get("profile", vault.profile)
    if profile not in PROFILES:
        raise FormatError(f"unknown profile {profile!r}", path=str(path), field="profile")
    n = vault.scheme.group.order
    a, ca = parse_scalar(sk_obj["a"], vault.profile, f"{path}: field 'sk.a'")
    if isinstance(sk_obj["b"], list):  # secure format v2: b_1..b_n, small integers
        bs = [
            parse_scalar(v, PAPER, f"{path}: field 'sk.b[{i}]'")[0]  # plain integers
            for i, v in enumerate(sk_obj["b"][:64])
        ]
        canonical = ca and 0 <= a < n and all(0 <= v < vault.num_classes for v in bs)
        return SecretKeyV2(a % n, tuple(v % n for v in bs)), canonical, doc
    b, cb = parse_scalar(sk_obj["b"], vault.profile, f"{path}: field 'sk.b'")
    canonical = ca and cb and 0 <= a < n and 0 <= b < n
    return SecretKey(a % n, b % n), canonical, doc


def _foreign_reason(doc: dict[str, Any], vault: Vault) -> str | None:
    """Fields that show, before any algebra, that the key is of another release."""
    if doc.get("profile", vault.profile) != vault.profile:
        return f"profile {doc.get('profile')!r}, the vault's is {vault.profile!r}"
    if doc.get("num_classes", vault.num_classes) != vault.num_classes:
        return f"{doc.get('num_classes')} classes, the vault has {vault.num_classes}"
    fp = doc.get("pk_fingerprint")
    known = {pk_fingerprint(g.scheme, g.pk) for g in vault.generations()}
    if isinstance(fp, str) and fp and fp not in known:
        return "its pk_fingerprint is not the public key of any key generation of this release"
    return None


def _scalar_bytes(vault: Vault, sk: SecretKey | SecretKeyV2) -> bytes:
    size = max(1, (vault.scheme.group.order.bit_length() + 7) // 8)
    if isinstance(sk, SecretKeyV2):
        return sk.a.to_bytes(size, "little") + b"".join(b.to_bytes(size, "little") for b in sk.b)
    return sk.a.to_bytes(size, "little") + sk.b.to_bytes(size, "little")


def _matches_family(gen: Vault, sk: SecretKey | SecretKeyV2) -> bool:
    """``sk`` is a working key of this generation's public key (the algebra only: a
    format v2 key with large b_i, e.g. an affine mix of colluders' keys, works too)."""
    if isinstance(gen.scheme, CSLiteV2) != isinstance(sk, SecretKeyV2):
        return False
    if isinstance(sk, SecretKeyV2):
        pk = gen.pk
        if not isinstance(pk, PublicKeyV2) or len(sk.b) != pk.width:
            return False
        g = gen.scheme.group
        acc = g.pow(pk.g1, sk.a)
        for i, bi in enumerate(sk.b):
            acc = g.mul(acc, g.pow(pk.gens[i + 1 : i + 2], bi))
        return g.equal(acc, pk.h)
    try:
        gen.scheme.check_key(gen.pk, sk)
    except Exception:
        return False
    return True


def verify_key(key_path: str | Path, vault_path: str | Path) -> KeyVerdict:
    """Name the licensee of a leaked key (see the module doc for the three answers)."""
    vault = load_vault(Path(vault_path))
    sk, canonical, doc = read_leaked_key(Path(key_path), vault)
    claimed = doc.get("licensee") if isinstance(doc.get("licensee"), str) else None

    def verdict(
        status: str, licensee: str | None, summary: str, generation: int | None = None
    ) -> KeyVerdict:
        return KeyVerdict(
            str(key_path),
            str(vault_path),
            vault.profile,
            status,
            licensee,
            summary,
            not canonical,
            claimed,
            generation,
            vault.generation,
        )

    reason = _foreign_reason(doc, vault)
    if reason is not None:
        return verdict("foreign", None, f"foreign: the key belongs to another release ({reason})")
    mine = _scalar_bytes(vault, sk)
    match: tuple[str, int] | None = None
    for gen in vault.generations():  # no early exit: every comparison runs
        for rec in gen.licensees:
            if hmac.compare_digest(mine, _scalar_bytes(vault, rec.sk)) and match is None:
                match = (rec.name, gen.generation)
    if match is not None:
        name, generation = match
        form = " (re-encoded: same key in another form)" if not canonical else ""
        note = ""
        if claimed is not None and claimed != name:
            note = f"; the file's own 'licensee' field says {claimed!r}, which is not trusted"
        return verdict(
            "issued",
            name,
            f"issued to licensee {name!r}{form}, {_generation_words(vault, generation)}{note}",
            generation,
        )
    derived_in: int | None = None
    for gen in vault.generations():
        if _matches_family(gen, sk):
            derived_in = gen.generation
            break
    if derived_in is None:
        return verdict(
            "foreign",
            None,
            "foreign: the key does not match this release's public key (g1^a * g2^b != h) "
            f"in any of its {len(vault.generations())} key generation(s)",
        )
    who = profile_of(vault.scheme).key_forgers
    if isinstance(sk, SecretKeyV2):
        who = (
            "the owner (the trapdoor is in the vault), colluding licensees mixing their own "
            "keys (an affine combination), or n + 1 colluders for any key"
        )
    return verdict(
        "derived",
        None,
        "derived: a working key of this release's family that was never issued "
        f"(a' + t*b' = a1 + t*b1; {_generation_words(vault, derived_in)}). Deriving it "
        f"needs t, known to {who}; the key alone "
        "does not name a licensee: attribute it with more evidence (verify-labels on the "
        "service that uses it, or the keys the suspect also holds)",
        derived_in,
    )


def _generation_words(vault: Vault, generation: int) -> str:
    if generation == vault.generation:
        return f"key generation {generation} (current)"
    gen = next(g for g in vault.generations() if g.generation == generation)
    when = f" of {gen.created}" if gen.created else ""
    return (
        f"key generation {generation}{when}, before a rotation "
        f"(current: generation {vault.generation})"
    )
