"""Licensee key files: ``sk_j`` plus the public key it belongs to.

``encryip-key/1`` (paper profile, secure format v1) and ``encryip-key/2`` (secure
format v2: ``sk.b`` a list of small integers, the ``scheme`` object and the ``labels``
decoding parameters) are both read. Loading always checks that the key matches the
public key, so a corrupted or foreign key fails at the boundary with
``InvalidKeyError`` instead of producing wrong labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encryip_runtime.crypto.profiles import AnyScheme
from encryip_runtime.crypto.scheme_v2 import CSLiteV2, PublicKeyV2
from encryip_runtime.exceptions import InvalidKeyError
from encryip_runtime.formats.common import (
    AnyPublicKey,
    AnySecretKey,
    SchemeBound,
    label_table_from_fields,
    label_table_to_json,
    optional_digest,
    pk_fingerprint,
    pk_from_fields,
    pk_to_json,
    scheme_from_fields,
    scheme_v2_from_fields,
    scheme_v2_to_json,
    sk_from_fields,
    sk_to_json,
)
from encryip_runtime.formats.jsonio import (
    Fields,
    parse_json_document,
    read_json_document,
    write_json,
)

__all__ = ["KEY_FORMAT", "KEY_FORMATS", "KEY_FORMAT_V2", "LicenseeKey"]

KEY_FORMAT = "encryip-key/1"
KEY_FORMAT_V2 = "encryip-key/2"
KEY_FORMATS = (KEY_FORMAT, KEY_FORMAT_V2)


@dataclass(frozen=True)
class LicenseeKey(SchemeBound):
    scheme: AnyScheme
    licensee: str
    pk: AnyPublicKey
    sk: AnySecretKey
    class_names: tuple[str, ...]
    manifest_digest: str

    @property
    def pk_fingerprint(self) -> str:
        return pk_fingerprint(self.scheme, self.pk)

    def to_json(self) -> dict[str, Any]:
        v2 = isinstance(self.scheme, CSLiteV2)
        doc: dict[str, Any] = {
            "format": KEY_FORMAT_V2 if v2 else KEY_FORMAT,
            "profile": self.profile,
            "group": self.scheme.group.name,
            "licensee": self.licensee,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
        }
        if isinstance(self.scheme, CSLiteV2):
            doc["scheme"] = scheme_v2_to_json(self.scheme)
        doc |= {
            "pk": pk_to_json(self.scheme, self.pk),
            "pk_fingerprint": self.pk_fingerprint,
            "manifest_digest": self.manifest_digest,
            "sk": sk_to_json(self.scheme, self.sk),
        }
        if isinstance(self.scheme, CSLiteV2):
            doc["labels"] = label_table_to_json(self.scheme.codec)
        return doc

    def save(self, path: Path) -> None:
        """Atomic, 0600."""
        write_json(path, self.to_json(), secret=True)

    @classmethod
    def load(cls, path: Path) -> LicenseeKey:
        """Read a key file: plaintext (the default), or sealed by its holder with
        ``encryip keys seal`` (passphrase from ENCRYIP_KEY_PASSPHRASE,
        --key-passphrase-file or a prompt; formats/vault_crypt.py)."""
        from encryip_runtime.formats.vault_crypt import KEY_ROLE, is_sealed, unseal

        path = Path(path)
        try:
            with path.open("rb") as fh:
                head = fh.read(64)
        except OSError:
            head = b""  # read_json_document reports it, naming the file
        if is_sealed(head):
            raw = unseal(path.read_bytes(), KEY_ROLE, str(path))
            return cls.from_fields(parse_json_document(raw, path, KEY_FORMATS))
        return cls.from_fields(read_json_document(path, KEY_FORMATS))

    @classmethod
    def from_fields(cls, f: Fields) -> LicenseeKey:
        v2 = f.has("format") and f.str("format") == KEY_FORMAT_V2
        scheme: AnyScheme = scheme_v2_from_fields(f) if v2 else scheme_from_fields(f)
        pk = pk_from_fields(scheme, f)
        if isinstance(scheme, CSLiteV2):
            assert isinstance(pk, PublicKeyV2)
            scheme = scheme.with_table(label_table_from_fields(scheme, pk, f))
        if f.has("pk_fingerprint") and f.str("pk_fingerprint") != pk_fingerprint(scheme, pk):
            raise f.error("pk_fingerprint", "does not match pk")
        sk = sk_from_fields(scheme, f)
        try:
            scheme.check_key(pk, sk)
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"{f.path}: field 'sk': {exc}") from None
        names = (
            tuple(f.str_list("class_names", length=scheme.num_classes))
            if f.has("class_names")
            else tuple(str(i) for i in range(scheme.num_classes))
        )
        return cls(
            scheme=scheme,
            licensee=f.str("licensee"),
            pk=pk,
            sk=sk,
            class_names=names,
            manifest_digest=optional_digest(f, "manifest_digest"),
        )

    def __repr__(self) -> str:  # never print the scalars
        fp = self.pk_fingerprint[:16]
        return f"LicenseeKey(licensee={self.licensee!r}, profile={self.profile!r}, pk={fp}…)"
