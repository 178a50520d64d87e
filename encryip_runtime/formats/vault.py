"""The arbitrator's vault (encryip-vault/1) and its arrays (``vault.npz``).

Secret: t, every sk_j, the class messages, class/trigger slots, each licensee's
output permutation, the Fake ciphertexts with the label each key decrypts them
to, and (in the npz) the trigger inputs and a labelled probe set.

Generations: ``keys rotate`` issues a new key family and codebook, but a key, file or
service of an earlier generation must still be attributable. The top-level fields are
the current generation (``generation``, ``created``); ``previous_generations`` holds
every earlier one, newest first, each a full vault document of its own (same format,
without ``previous_generations``), sharing the arrays file.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.profiles import AnyScheme, profile_of
from encryip_runtime.crypto.scheme import Ciphertexts, KeyFamily
from encryip_runtime.crypto.scheme_v2 import (
    CSLiteV2,
    KeyFamilyV2,
    PublicKeyV2,
    SecretKeyV2,
    Trigger,
)
from encryip_runtime.exceptions import EncodingError, FormatError
from encryip_runtime.formats.common import (
    AnyPublicKey,
    AnySecretKey,
    SchemeBound,
    ciphertexts_from_json,
    ciphertexts_to_json,
    label_table_from_fields,
    label_table_to_json,
    optional_digest,
    pk_from_fields,
    pk_to_json,
    scheme_from_fields,
    scheme_v2_from_fields,
    scheme_v2_to_json,
    sk_from_fields,
    sk_to_json,
    triggers_from_fields,
    triggers_to_json,
)
from encryip_runtime.formats.jsonio import Fields, json_bytes, parse_json_document
from encryip_runtime.formats.vault_crypt import (
    ARRAYS_ROLE,
    VAULT_ROLE,
    read_vault_bytes,
    write_vault_bytes,
)

__all__ = ["VAULT_FORMAT", "VAULT_FORMAT_V2", "LicenseeRecord", "Vault", "VaultArrays", "utc_now"]

VAULT_FORMAT = "encryip-vault/1"
#: Secure format v2: ``scheme``, ``trapdoor`` {s, t[]}, ``labels``, ``triggers`` {d, k}.
VAULT_FORMAT_V2 = "encryip-vault/2"
_ARRAY_DTYPES = {
    "trigger_inputs": np.uint8,
    "probe_inputs": np.uint8,
    "probe_labels": np.int64,
}


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (generation and licensee dates)."""
    import datetime

    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class LicenseeRecord:
    name: str
    sk: AnySecretKey = field(repr=False)
    #: Output k of this licensee's model file is output ``permutation[k]`` of the base model.
    permutation: tuple[int, ...] = field(repr=False)
    #: UTC date (ISO 8601) the licensee was added; "" when not recorded (older vaults)
    added: str = ""
    #: secret seed (64 hex) and strength of the licensee file's weight fingerprint
    #: (release/fingerprint.py); "" / 0 when the file carries none (older releases)
    fingerprint_seed: str = field(default="", repr=False)
    fingerprint_strength: float = 0.0


@dataclass(frozen=True)
class VaultArrays:
    trigger_inputs: npt.NDArray[np.uint8]  # (T, C, H, W)
    probe_inputs: npt.NDArray[np.uint8]  # (M, C, H, W)
    probe_labels: npt.NDArray[np.int64]  # (M,)

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            trigger_inputs=self.trigger_inputs,
            probe_inputs=self.probe_inputs,
            probe_labels=self.probe_labels,
        )
        return buf.getvalue()

    @classmethod
    def from_npz(cls, path: Path) -> VaultArrays:
        """Read vault.npz (sealed at rest, or a plaintext one with a warning)."""
        return cls.from_npz_bytes(read_vault_bytes(Path(path), ARRAYS_ROLE), Path(path))

    @classmethod
    def from_npz_bytes(cls, data: bytes, path: Path) -> VaultArrays:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in _ARRAY_DTYPES if k in z.files}
        except (
            OSError, ValueError, zipfile.BadZipFile, EOFError,
            zlib.error, NotImplementedError, RuntimeError,  # corrupt / unsupported zip members
        ) as exc:  # fmt: skip
            raise FormatError(f"not a valid .npz archive ({exc})", path=str(path)) from None
        for k, dt in _ARRAY_DTYPES.items():
            if k not in arrays:
                raise FormatError("missing array", path=str(path), field=k)
            if arrays[k].dtype != dt:
                raise FormatError(
                    f"expected dtype {np.dtype(dt).name}, got {arrays[k].dtype}",
                    path=str(path),
                    field=k,
                )
        for k in ("trigger_inputs", "probe_inputs"):
            if arrays[k].ndim != 4:
                raise FormatError(
                    f"expected shape (N, C, H, W), got {arrays[k].shape}", path=str(path), field=k
                )
        if arrays["probe_labels"].shape != (len(arrays["probe_inputs"]),):
            raise FormatError(
                "one label per probe input expected", path=str(path), field="probe_labels"
            )
        return cls(arrays["trigger_inputs"], arrays["probe_inputs"], arrays["probe_labels"])


@dataclass(frozen=True)
class Vault(SchemeBound):
    scheme: AnyScheme
    pk: AnyPublicKey
    t: int = field(repr=False)  # format v1: g2 = t g1 (format v2: 0, see ``trapdoor``)
    class_names: tuple[str, ...]
    licensees: tuple[LicenseeRecord, ...]
    messages: npt.NDArray[Any] = field(repr=False)  # M_y per class (elements)
    class_ciphertexts: Ciphertexts = field(repr=False)  # the fixed Enc(pk, M_y)
    trigger_ciphertexts: Ciphertexts = field(repr=False)  # Fake(pk), one per trigger input
    output_size: int
    #: secure: base-model slot of each class / trigger (None for paper)
    class_slots: tuple[int, ...] | None = None
    trigger_slots: tuple[int, ...] | None = None
    manifest_digest: str = ""
    model_sha256: str = ""
    arrays_file: str = "vault.npz"
    arrays_sha256: str = ""
    root_index: int = 0  # which licensee record holds (a1, b1)
    #: 1 for the first key family; ``keys rotate`` adds one
    generation: int = 1
    created: str = ""  # UTC date (ISO 8601) this generation was issued
    #: every earlier generation, newest first (none of them has ``previous`` itself)
    previous: tuple[Vault, ...] = field(default=(), repr=False)
    #: format v2: (s, (t_1..t_n)) with h = s g1, g_(i+1) = t_i g1; and the Fakes' offsets
    trapdoor: tuple[int, tuple[int, ...]] | None = field(default=None, repr=False)
    triggers: tuple[Trigger, ...] = field(default=(), repr=False)

    def generations(self) -> tuple[Vault, ...]:
        """This generation and every earlier one, newest first."""
        return (self, *self.previous)

    def rotated(self, new: Vault) -> Vault:
        """``new`` as the next generation, with this one (and its history) kept."""
        from dataclasses import replace

        old = replace(self, previous=())
        return replace(new, generation=self.generation + 1, previous=(old, *self.previous))

    @property
    def num_triggers(self) -> int:
        return len(self.trigger_ciphertexts)

    def family(self) -> KeyFamily:
        keys = [r.sk for r in self.licensees]
        keys.insert(0, keys.pop(self.root_index))
        return KeyFamily(self.pk, self.t, tuple(keys))  # type: ignore[arg-type]

    def family_v2(self) -> KeyFamilyV2:
        """Format v2: the owner's trapdoor and every key (licensee order)."""
        if self.trapdoor is None or not isinstance(self.pk, PublicKeyV2):
            raise ValueError("not a format v2 vault")
        keys = tuple(r.sk for r in self.licensees if isinstance(r.sk, SecretKeyV2))
        return KeyFamilyV2(self.pk, self.trapdoor[0], self.trapdoor[1], keys)

    def expected_trigger_labels(self) -> dict[str, npt.NDArray[np.int64]]:
        """Dec(sk_j, Fake_i) as labels, for every licensee (paper Eqn. 5)."""
        return {
            r.name: self.scheme.decrypt_labels(r.sk, self.trigger_ciphertexts)
            for r in self.licensees
        }

    def licensee(self, name: str) -> LicenseeRecord:
        for r in self.licensees:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        g = self.scheme.group
        doc: dict[str, Any] = {
            "format": VAULT_FORMAT_V2 if isinstance(self.scheme, CSLiteV2) else VAULT_FORMAT,
            "profile": self.profile,
            "group": g.name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "pk": pk_to_json(self.scheme, self.pk),
        }
        if isinstance(self.scheme, CSLiteV2):
            assert self.trapdoor is not None
            doc["scheme"] = scheme_v2_to_json(self.scheme)
            doc["trapdoor"] = {
                "s": g.scalar_to_json(self.trapdoor[0]),
                "t": [g.scalar_to_json(t) for t in self.trapdoor[1]],
            }
            doc["labels"] = label_table_to_json(self.scheme.codec)
            doc["triggers"] = triggers_to_json(self.triggers)
        else:
            doc["t"] = g.scalar_to_json(self.t)
        doc |= {
            "root_index": self.root_index,
            "licensees": [
                {
                    "name": r.name,
                    "sk": sk_to_json(self.scheme, r.sk),
                    "permutation": list(r.permutation),
                    **({"added": r.added} if r.added else {}),
                    **(
                        {
                            "fingerprint": {
                                "seed": r.fingerprint_seed,
                                "strength": r.fingerprint_strength,
                            }
                        }
                        if r.fingerprint_seed
                        else {}
                    ),
                }
                for r in self.licensees
            ],
            "messages": g.to_json(self.messages),
            "class_ciphertexts": ciphertexts_to_json(self.scheme, self.class_ciphertexts),
            "trigger_ciphertexts": ciphertexts_to_json(self.scheme, self.trigger_ciphertexts),
            "expected_trigger_labels": {
                k: v.tolist() for k, v in self.expected_trigger_labels().items()
            },
            "output_size": self.output_size,
            "manifest_digest": self.manifest_digest,
            "model_sha256": self.model_sha256,
            "arrays": {"file": self.arrays_file, "sha256": self.arrays_sha256},
            "generation": self.generation,
            "created": self.created,
        }
        if self.previous:
            doc["previous_generations"] = [p.to_json() for p in self.previous]
        if self.class_slots is not None:
            doc["class_slots"] = list(self.class_slots)
            doc["trigger_slots"] = list(self.trigger_slots or ())
        return doc

    def save(self, path: Path, arrays: VaultArrays | None = None) -> Vault:
        """Write vault.json (and vault.npz when given), both 0600 and atomic."""
        path = Path(path)
        vault = self
        if arrays is not None:
            data = arrays.to_npz_bytes()
            write_vault_bytes(path.parent / self.arrays_file, data, ARRAYS_ROLE)
            from dataclasses import replace

            vault = replace(self, arrays_sha256=hashlib.sha256(data).hexdigest())
        write_vault_bytes(path, json_bytes(vault.to_json()), VAULT_ROLE)
        return vault

    def load_arrays(self, vault_path: Path) -> VaultArrays:
        path = Path(vault_path).parent / self.arrays_file
        if not path.exists():
            raise FormatError("file not found (named by the vault's arrays.file)", path=str(path))
        data = read_vault_bytes(path, ARRAYS_ROLE)
        # The digest is over the plaintext npz: the same whether it is sealed at rest or not.
        if self.arrays_sha256 and hashlib.sha256(data).hexdigest() != self.arrays_sha256:
            raise FormatError("sha256 does not match the vault (arrays.sha256)", path=str(path))
        arrays = VaultArrays.from_npz_bytes(data, path)
        if len(arrays.trigger_inputs) != self.num_triggers:
            raise FormatError(
                f"{len(arrays.trigger_inputs)} trigger inputs but the vault has "
                f"{self.num_triggers} trigger ciphertexts",
                path=str(path),
                field="trigger_inputs",
            )
        if arrays.probe_labels.size and (
            arrays.probe_labels.min() < 0 or arrays.probe_labels.max() >= self.num_classes
        ):
            raise FormatError("label out of range", path=str(path), field="probe_labels")
        return arrays

    @classmethod
    def load(cls, path: Path) -> Vault:
        raw = read_vault_bytes(Path(path), VAULT_ROLE)
        return cls.from_fields(
            parse_json_document(raw, Path(path), (VAULT_FORMAT, VAULT_FORMAT_V2))
        )

    @classmethod
    def from_fields(cls, f: Fields, *, nested: bool = False) -> Vault:
        """Parse (and check) one vault document; ``nested``: an earlier generation."""
        v2 = f.has("format") and f.str("format") == VAULT_FORMAT_V2
        scheme: AnyScheme = scheme_v2_from_fields(f) if v2 else scheme_from_fields(f)
        g = scheme.group
        k = scheme.num_classes
        pk = pk_from_fields(scheme, f)
        t = 0
        trapdoor: tuple[int, tuple[int, ...]] | None = None
        triggers: tuple[Trigger, ...] = ()
        if isinstance(scheme, CSLiteV2):
            assert isinstance(pk, PublicKeyV2)
            scheme = scheme.with_table(label_table_from_fields(scheme, pk, f))
            tf = f.obj_("trapdoor")
            parsed_t = []
            for i, v in enumerate(tf.list("t", length=scheme.width)):
                try:
                    parsed_t.append(g.scalar_from_json(v))
                except EncodingError as exc:
                    raise tf.error(f"t[{i}]", str(exc)) from None
            trapdoor = (tf.parse("s", g.scalar_from_json), tuple(parsed_t))
            triggers = triggers_from_fields(scheme, f)
        else:
            t = f.parse("t", g.scalar_from_json)
        size = f.int("output_size", lo=1)
        trig_cts = ciphertexts_from_json(scheme, f, "trigger_ciphertexts")
        want_size = profile_of(scheme).output_size(scheme, len(trig_cts))
        if size != want_size:
            raise f.error("output_size", f"expected {want_size} for this profile, got {size}")
        recs = []
        names: set[str] = set()
        for i, item in enumerate(f.list("licensees")):
            rf = Fields(item, f.path, f"licensees[{i}]")
            name = rf.str("name")
            if name in names:
                raise rf.error("name", f"duplicate licensee {name!r}")
            names.add(name)
            sk = sk_from_fields(scheme, rf)
            try:
                scheme.check_key(pk, sk)
            except Exception as exc:
                raise rf.error("sk", str(exc)) from None
            added = rf.str("added") if rf.has("added") else ""
            fp_seed, fp_strength = "", 0.0
            if rf.has("fingerprint"):
                ff = rf.obj_("fingerprint")
                fp_seed = ff.str("seed")
                if len(fp_seed) != 64 or any(c not in "0123456789abcdef" for c in fp_seed):
                    raise ff.error("seed", "expected 64 lowercase hex digits")
                raw = ff.raw("strength")
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw < 1:
                    raise ff.error("strength", f"expected a number in (0, 1), got {raw!r}")
                fp_strength = float(raw)
            recs.append(
                LicenseeRecord(
                    name,
                    sk,
                    tuple(rf.permutation("permutation", size)),
                    added,
                    fp_seed,
                    fp_strength,
                )
            )
        if not recs:
            raise f.error("licensees", "at least one licensee expected")
        messages = f.parse("messages", g.from_json)
        if len(messages) != k:
            raise f.error("messages", f"expected {k} messages, got {len(messages)}")
        wrong = np.flatnonzero(scheme.codec.labels_of(messages) != np.arange(k))
        if wrong.size:
            raise f.error("messages", f"message {int(wrong[0])} does not decode to its class")
        class_cts = ciphertexts_from_json(scheme, f, "class_ciphertexts")
        if len(class_cts) != k:
            raise f.error("class_ciphertexts", f"expected {k} ciphertexts, got {len(class_cts)}")
        root_sk: Any = recs[0].sk
        if not g.equal(scheme.dec(root_sk, class_cts), messages):
            raise f.error("class_ciphertexts", "do not decrypt to the vault's messages")
        if f.has("expected_trigger_labels"):
            ef = f.obj_("expected_trigger_labels")
            for rec in recs:
                got = ef.int_list(rec.name, length=len(trig_cts), hi=k - 1)
                rec_sk: Any = rec.sk
                if got != scheme.decrypt_labels(rec_sk, trig_cts).tolist():
                    raise ef.error(rec.name, "does not match Dec(sk, trigger_ciphertexts)")
        class_slots: tuple[int, ...] | None = None
        trigger_slots: tuple[int, ...] | None = None
        if profile_of(scheme).uses_codebook:
            class_slots = tuple(f.int_list("class_slots", length=k, hi=size - 1))
            trigger_slots = tuple(f.int_list("trigger_slots", length=len(trig_cts), hi=size - 1))
            if len(set(class_slots) | set(trigger_slots)) != k + len(trig_cts):
                raise f.error("trigger_slots", "class and trigger slots must be distinct")
        arrays = f.obj_("arrays")
        arrays_file = arrays.str("file")
        if not arrays_file or "/" in arrays_file or "\\" in arrays_file or arrays_file[0] == ".":
            raise arrays.error("file", "must be a plain file name beside the vault")
        root_index = f.int("root_index", lo=0, hi=len(recs) - 1) if f.has("root_index") else 0
        generation = f.int("generation", lo=1) if f.has("generation") else 1
        previous: list[Vault] = []
        if f.has("previous_generations"):
            if nested:
                raise f.error("previous_generations", "an earlier generation has no history")
            for i, item in enumerate(f.list("previous_generations")):
                pf = Fields(item, f.path, f"previous_generations[{i}]")
                prev = cls.from_fields(pf, nested=True)
                want = generation - 1 - i
                if prev.generation != want:
                    raise pf.error(
                        "generation", f"expected {want} (newest first), got {prev.generation}"
                    )
                if prev.profile != scheme.profile or prev.num_classes != k:
                    raise pf.error(
                        "profile", "an earlier generation of another profile or class count"
                    )
                previous.append(prev)
        vault = cls(
            scheme=scheme,
            pk=pk,
            t=t,
            class_names=tuple(f.str_list("class_names", length=k)),
            licensees=tuple(recs),
            messages=messages,
            class_ciphertexts=class_cts,
            trigger_ciphertexts=trig_cts,
            output_size=size,
            class_slots=class_slots,
            trigger_slots=trigger_slots,
            manifest_digest=optional_digest(f, "manifest_digest"),
            model_sha256=optional_digest(f, "model_sha256"),
            arrays_file=arrays_file,
            arrays_sha256=optional_digest(arrays, "sha256"),
            root_index=root_index,
            generation=generation,
            created=f.str("created") if f.has("created") else "",
            previous=tuple(previous),
            trapdoor=trapdoor,
            triggers=triggers,
        )
        if isinstance(pk, PublicKeyV2) and trapdoor is not None:
            if len(triggers) != len(trig_cts):
                raise f.error("triggers", f"{len(triggers)} entries for {len(trig_cts)} Fakes")
            if not g.equal(g.pow(pk.g1, trapdoor[0]), pk.h):
                raise f.error("trapdoor", "s g1 != h: s does not belong to this public key")
            for i, ti in enumerate(trapdoor[1]):
                if not g.equal(g.pow(pk.g1, ti), pk.gens[i + 1 : i + 2]):
                    raise f.error(f"trapdoor.t[{i}]", "t_i g1 != g_(i+1)")
        elif not g.equal(g.pow(pk.g1, t), pk.g2):
            raise f.error("t", "g1^t != g2: t does not belong to this public key")
        return vault
