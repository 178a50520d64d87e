"""Key management on an existing release, without training: add a licensee, rotate all keys."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from encryip_runtime.crypto.labels import HashLabelCodec
from encryip_runtime.exceptions import EncryIPError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.formats.vault import Vault, utc_now
from encryip_runtime.release.plan import validate_licensee_names
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
    family = vault.scheme.add_licensee(vault.family())
    record = write_licensee(paths, manifest, model, vault.scheme, name, family.keys[-1])
    vault.scheme.check_key(vault.pk, record.sk)
    replace(vault, licensees=(*vault.licensees, record)).save(paths.vault)
    log.info("added licensee %s to key generation %d", name, vault.generation)
    return paths.key(name)


def rotate_keys(release_dir: Path) -> list[Path]:
    """Secure profile: new key family, re-encrypted codebook; every old key stops working.

    The network is untouched: the codebook sits outside it (docs/design.md §3.2). The
    vault keeps the old generation (keys, codebook messages, Fake ciphertexts,
    permutations, fingerprints, date), so a key, file or service of before the rotation
    is still attributed.
    """
    paths, manifest, vault, model = _open(release_dir)
    scheme = vault.scheme
    if scheme.profile != "secure":
        raise EncryIPError(
            "key rotation needs the secure profile: in the paper profile the network emits "
            "ciphertext elements directly, so new keys mean retraining"
        )
    assert isinstance(scheme.codec, HashLabelCodec)
    assert vault.class_slots is not None and vault.trigger_slots is not None
    family = scheme.gen(len(vault.licensees))
    messages = scheme.codec.sample_messages(scheme.group)
    class_cts = scheme.enc(family.pk, messages)
    trig_cts = scheme.fake(family.pk, vault.num_triggers)
    codebook = np.zeros((vault.output_size, 3, scheme.group.element_size), dtype=np.uint8)
    codebook[list(vault.class_slots)] = class_cts
    codebook[list(vault.trigger_slots)] = trig_cts
    new_manifest = replace(manifest, pk=family.pk, codebook=codebook)
    new_manifest.save(paths.manifest)
    records = []
    for rec, sk in zip(vault.licensees, family.keys, strict=True):
        written = write_licensee(
            paths,
            new_manifest,
            model,
            scheme,
            rec.name,
            sk,
            np.asarray(rec.permutation, dtype=np.int64),
            record_fingerprint(rec),
            fresh_fingerprint=False,
        )
        records.append(replace(written, added=rec.added or written.added))
    new = replace(
        vault,
        pk=family.pk,
        t=family.t,
        licensees=tuple(records),
        messages=messages,
        class_ciphertexts=class_cts,
        trigger_ciphertexts=trig_cts,
        manifest_digest=new_manifest.digest,
        root_index=0,
        created=utc_now(),
    )
    rotated = vault.rotated(new)
    rotated.save(paths.vault)
    log.info(
        "rotated keys for %d licensees: generation %d (the vault keeps generations 1-%d)",
        len(records),
        rotated.generation,
        rotated.generation,
    )
    return [paths.key(r.name) for r in records]
