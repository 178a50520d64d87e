"""Key management on an existing release, without training: add a licensee, rotate all keys."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encryip_runtime.crypto.profiles import AnyScheme, profile_of
from encryip_runtime.crypto.scheme import CSLite
from encryip_runtime.crypto.scheme_v2 import DEFAULT_SHIFT_RANGE, CSLiteV2, KeyFamilyV2
from encryip_runtime.exceptions import EncryIPError
from encryip_runtime.formats.common import AnySecretKey
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.vault import LicenseeRecord, Vault, utc_now
from encryip_runtime.release.plan import generate_v1, generate_v2, validate_licensee_names
from encryip_runtime.release.writer import ReleasePaths, record_fingerprint, write_licensee

__all__ = ["add_licensee", "rotate_keys"]

log = logging.getLogger(__name__)


def _open(release_dir: Path) -> tuple[ReleasePaths, Manifest, Vault, bytes]:
    paths = ReleasePaths(Path(release_dir))
    manifest = Manifest.load(paths.manifest)
    vault = Vault.load(paths.vault)
    model = paths.model.read_bytes()
    if hashlib.sha256(model).hexdigest() != manifest.model_sha256:
        raise EncryIPError(f"{paths.model}: sha256 does not match {paths.manifest} (model.sha256)")
    if vault.manifest_digest and vault.manifest_digest != manifest.digest:
        raise EncryIPError(f"{paths.vault} belongs to another release (manifest_digest differs)")
    return paths, manifest, vault, model


def add_licensee(release_dir: Path, name: str) -> Path:
    """Paper §4.5(2): one more key of the same family, its permuted model, its key file.

    Existing keys, models and the served base model are untouched. Returns the key path.
    """
    paths, manifest, vault, model = _open(release_dir)
    validate_licensee_names([*[r.name for r in vault.licensees], name])
    scheme = vault.scheme
    sk: AnySecretKey
    if isinstance(scheme, CSLiteV2):
        sk = scheme.add_licensee(vault.family_v2(), vault.triggers).keys[-1]
        scheme.check_key(vault.family_v2().pk, sk)
    else:
        assert isinstance(scheme, CSLite)
        sk = scheme.add_licensee(vault.family()).keys[-1]
        scheme.check_key(vault.family().pk, sk)
    record = write_licensee(paths, manifest, model, scheme, name, sk)
    replace(vault, licensees=(*vault.licensees, record)).save(paths.vault)
    log.info("added licensee %s to key generation %d", name, vault.generation)
    return paths.key(name)


def rotate_keys(release_dir: Path, *, secure_format: int | None = None) -> list[Path]:
    """Secure profile: new key family, re-encrypted codebook; every old key stops working.

    The network is untouched: the codebook sits outside it (docs/design.md §3.2). The
    vault keeps the old generation (keys, codebook messages, Fake ciphertexts,
    permutations, fingerprints, date), so a key, file or service of before the rotation
    is still attributed. ``secure_format`` (default: the release's own) may move a
    format v1 release to format v2, or re-size a v2 release's width n for today's
    number of licensees.
    """
    paths, manifest, vault, model = _open(release_dir)
    scheme = vault.scheme
    if not profile_of(scheme).uses_codebook:
        raise EncryIPError(
            "key rotation needs the secure profile: in the paper profile the network emits "
            "ciphertext elements directly, so new keys mean retraining"
        )
    target = scheme.format_version if secure_format is None else secure_format
    n = len(vault.licensees)
    triggers = vault.triggers
    if target == 2:
        shift = scheme.shift_range if isinstance(scheme, CSLiteV2) else DEFAULT_SHIFT_RANGE
        crypto, triggers = generate_v2(scheme.num_classes, n, vault.num_triggers, shift)
    elif target != 1:
        raise EncryIPError(f"unknown secure format {target} (expected 1 or 2)")
    elif not isinstance(scheme, CSLite):
        raise EncryIPError("a format v2 release cannot be rotated back to format v1")
    else:
        crypto = generate_v1(scheme, n, vault.num_triggers)
    new_scheme, family, messages, class_cts, trig_cts = crypto
    assert vault.class_slots is not None and vault.trigger_slots is not None
    codebook = np.zeros((vault.output_size, *class_cts.shape[1:]), dtype=np.uint8)
    codebook[list(vault.class_slots)] = class_cts
    codebook[list(vault.trigger_slots)] = trig_cts
    new_manifest = replace(manifest, scheme=new_scheme, pk=family.pk, codebook=codebook)
    new_manifest.save(paths.manifest)
    records = _reissue(paths, new_manifest, model, new_scheme, vault, family.keys)
    owner: dict[str, Any] = (  # the trapdoor: format v1's t, format v2's (s, t_i)
        {"t": 0, "trapdoor": (family.s, family.t)}
        if isinstance(family, KeyFamilyV2)
        else {"t": family.t}
    )
    new = replace(
        vault,
        scheme=new_scheme,
        pk=family.pk,
        triggers=triggers,
        licensees=tuple(records),
        messages=messages,
        class_ciphertexts=class_cts,
        trigger_ciphertexts=trig_cts,
        manifest_digest=new_manifest.digest,
        root_index=0,
        created=utc_now(),
        **owner,
    )
    rotated = vault.rotated(new)
    rotated.save(paths.vault)
    log.info(
        "rotated keys for %d licensees (secure format v%d): generation %d "
        "(the vault keeps generations 1-%d)",
        len(records),
        target,
        rotated.generation,
        rotated.generation,
    )
    return [paths.key(r.name) for r in records]


def _reissue(
    paths: ReleasePaths,
    manifest: Manifest,
    model: bytes,
    scheme: AnyScheme,
    vault: Vault,
    keys: Sequence[AnySecretKey],
) -> list[LicenseeRecord]:
    """Every licensee's file and key again under the new manifest: the same output
    permutation and weight fingerprint, a new key (``keys`` in licensee order)."""
    records = []
    for rec, sk in zip(vault.licensees, keys, strict=True):
        written = write_licensee(
            paths,
            manifest,
            model,
            scheme,
            rec.name,
            sk,
            np.asarray(rec.permutation, dtype=np.int64),
            record_fingerprint(rec),
            fresh_fingerprint=False,
        )
        records.append(replace(written, added=rec.added or written.added))
    return records
