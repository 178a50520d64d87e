"""Write a release directory (docs/design.md §1, §4):

```
model.onnx, manifest.json              public: the base model
licensees/<name>/model.onnx, manifest.json   the licensee's variant: outputs permuted,
                                       inner weights fingerprinted (release/fingerprint.py)
keys/<name>.key                        secret (0600): one per licensee
vault.json, vault.npz                  secret (0600): the arbitrator's
```
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.profiles import AnyScheme, profile_of
from encryip_runtime.crypto.scheme import KeyFamily
from encryip_runtime.crypto.scheme_v2 import KeyFamilyV2
from encryip_runtime.formats.common import AnySecretKey
from encryip_runtime.formats.jsonio import atomic_write_bytes
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.manifest import InputSpec, Manifest
from encryip_runtime.formats.vault import LicenseeRecord, Vault, VaultArrays, utc_now
from encryip_runtime.release.fingerprint import Fingerprint, apply_fingerprint
from encryip_runtime.release.onnx_permute import permute_onnx_outputs
from encryip_runtime.release.plan import ProtectionPlan

__all__ = [
    "ReleasePaths",
    "licensee_permutation",
    "record_fingerprint",
    "write_licensee",
    "write_release",
]


@dataclass(frozen=True)
class ReleasePaths:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.onnx"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def vault(self) -> Path:
        return self.root / "vault.json"

    def key(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.key"

    def licensee_dir(self, name: str) -> Path:
        return self.root / "licensees" / name


def licensee_permutation(scheme: AnyScheme, output_size: int) -> npt.NDArray[np.int64]:
    """A fresh secret output order for one licensee's file.

    paper: positions are shuffled within each of the three blocks, so the file keeps
    the paper's block layout; secure: any order of the S slots.
    """
    return profile_of(scheme).licensee_permutation(output_size)


def variant_manifest(
    base: Manifest, name: str, order: npt.NDArray[np.int64], model_sha256: str
) -> Manifest:
    """The manifest that matches a model whose output k is base output ``order[k]``."""
    if profile_of(base).uses_codebook:
        assert base.codebook is not None
        return replace(
            base, codebook=base.codebook[order], licensee=name, model_sha256=model_sha256
        )
    base_order = (
        np.arange(base.output_size) if base.output_order is None else np.asarray(base.output_order)
    )
    return replace(
        base,
        output_order=tuple(int(v) for v in base_order[order]),
        licensee=name,
        model_sha256=model_sha256,
    )


def write_licensee(
    paths: ReleasePaths,
    base: Manifest,
    base_model: bytes,
    scheme: AnyScheme,
    name: str,
    sk: AnySecretKey,
    order: npt.NDArray[np.int64] | None = None,
    fingerprint: Fingerprint | None = None,
    *,
    fresh_fingerprint: bool = True,
) -> LicenseeRecord:
    """The licensee's permuted, fingerprinted model + manifest and its key file.

    Needs no training. ``order`` / ``fingerprint``: keep the licensee's existing ones
    (key rotation: the file stays byte-identical); fresh secret ones when ``None``
    (no fingerprint at all when ``fresh_fingerprint`` is false: an older file kept).
    """
    order = licensee_permutation(scheme, base.output_size) if order is None else order
    if fingerprint is None and fresh_fingerprint:
        fingerprint = Fingerprint.fresh()
    if fingerprint is not None:
        base_model = apply_fingerprint(base_model, fingerprint)
    model = permute_onnx_outputs(base_model, order)
    d = paths.licensee_dir(name)
    atomic_write_bytes(d / "model.onnx", model)
    manifest = variant_manifest(base, name, order, hashlib.sha256(model).hexdigest())
    manifest.save(d / "manifest.json")
    key = LicenseeKey(scheme, name, base.pk, sk, base.class_names, manifest.digest)
    key.save(paths.key(name))
    return LicenseeRecord(
        name,
        sk,
        tuple(int(v) for v in order),
        utc_now(),
        "" if fingerprint is None else fingerprint.seed,
        0.0 if fingerprint is None else fingerprint.strength,
    )


def record_fingerprint(rec: LicenseeRecord) -> Fingerprint | None:
    """The weight fingerprint a vault record describes (None: the file carries none)."""
    if not rec.fingerprint_seed:
        return None
    return Fingerprint(rec.fingerprint_seed, rec.fingerprint_strength)


def write_release(
    out_dir: Path,
    plan: ProtectionPlan,
    model_onnx: bytes,
    *,
    input_spec: InputSpec,
    trigger_inputs: npt.NDArray[np.uint8],
    probe_inputs: npt.NDArray[np.uint8],
    probe_labels: npt.NDArray[np.int64],
    model_name: str = "encryip",
) -> ReleasePaths:
    """Write everything for ``plan``'s licensees. Refuses to overwrite an existing release."""
    paths = ReleasePaths(Path(out_dir))
    if paths.manifest.exists() or paths.vault.exists():
        raise FileExistsError(f"{out_dir} already holds a release; choose an empty directory")
    if len(trigger_inputs) != plan.num_triggers:
        raise ValueError(
            f"{len(trigger_inputs)} trigger inputs for {plan.num_triggers} Fake ciphertexts"
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(paths.model, model_onnx)
    base = plan.manifest(
        input_spec=input_spec,
        model_sha256=hashlib.sha256(model_onnx).hexdigest(),
        model_name=model_name,
    )
    base.save(paths.manifest)
    records = [
        write_licensee(paths, base, model_onnx, plan.scheme, name, sk)
        for name, sk in zip(plan.licensees, plan.licensee_keys(), strict=True)
    ]
    vault = vault_from_plan(plan, records, base)
    vault.save(
        paths.vault,
        VaultArrays(
            np.ascontiguousarray(trigger_inputs, dtype=np.uint8),
            np.ascontiguousarray(probe_inputs, dtype=np.uint8),
            np.asarray(probe_labels, dtype=np.int64),
        ),
    )
    return paths


def vault_from_plan(plan: ProtectionPlan, records: list[LicenseeRecord], base: Manifest) -> Vault:
    fam = plan.family
    v2 = isinstance(fam, KeyFamilyV2)
    return Vault(
        scheme=plan.scheme,
        pk=fam.pk,
        t=0 if isinstance(fam, KeyFamilyV2) else fam.t,
        trapdoor=(fam.s, fam.t) if isinstance(fam, KeyFamilyV2) else None,
        triggers=plan.triggers if v2 else (),
        class_names=plan.class_names,
        licensees=tuple(records),
        messages=plan.messages,
        class_ciphertexts=plan.class_ciphertexts,
        trigger_ciphertexts=plan.trigger_ciphertexts,
        output_size=plan.output_size,
        class_slots=None if plan.class_slots is None else tuple(int(v) for v in plan.class_slots),
        trigger_slots=None
        if plan.trigger_slots is None
        else tuple(int(v) for v in plan.trigger_slots),
        manifest_digest=base.digest,
        model_sha256=base.model_sha256,
        created=utc_now(),
    )


def family_of(vault: Vault) -> KeyFamily:
    return vault.family()
