"""The protection plan: keys, label ciphertexts, Fake triggers and training targets.

This is Algorithm 1's crypto half (Gen, Enc of every label, Φ), done once before
training and without torch. As in the paper, each label gets ONE fixed ciphertext
(its first encryption); the runtime's SampDist re-randomises it at serving time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto import make_scheme
from encryip_runtime.crypto.labels import HashLabelCodec, OffsetLabelCodec
from encryip_runtime.crypto.profiles import (
    DEFAULT_SECURE_FORMAT,
    SECURE,
    AnyScheme,
    make_scheme_v2,
    profile_of,
    random_permutation,
)
from encryip_runtime.crypto.scheme import Ciphertexts, CSLite, KeyFamily
from encryip_runtime.crypto.scheme_v2 import (
    DEFAULT_SHIFT_RANGE,
    CSLiteV2,
    KeyFamilyV2,
    LabelTable,
    Trigger,
    cached_table,
)
from encryip_runtime.exceptions import EncodingError
from encryip_runtime.formats.common import AnySecretKey, SchemeBound
from encryip_runtime.formats.manifest import InputSpec, Manifest
from encryip_runtime.transfer import DECODERS, CodebookTransfer, OneHotTransfer

__all__ = [
    "Crypto",
    "ProtectionPlan",
    "generate_v1",
    "generate_v2",
    "new_label_table",
    "plan_protection",
    "random_permutation",
    "validate_licensee_names",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_licensee_names(names: list[str]) -> list[str]:
    problems = [n for n in names if not _NAME.match(n)]
    if problems:
        raise ValueError(
            "licensee names must be 1-64 characters of letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit): {', '.join(repr(p) for p in problems)}"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate licensee names: {', '.join(dupes)}")
    if not names:
        raise ValueError("at least one licensee is required")
    return names


@dataclass(frozen=True)
class ProtectionPlan(SchemeBound):
    scheme: AnyScheme
    family: KeyFamily | KeyFamilyV2
    licensees: tuple[str, ...]
    class_names: tuple[str, ...]
    messages: Any  # M_y, one element per class
    class_ciphertexts: Ciphertexts  # the fixed Enc(pk, M_y)
    trigger_ciphertexts: Ciphertexts  # Fake(pk), one per trigger
    output_size: int
    class_slots: npt.NDArray[np.int64] | None = None  # secure only
    trigger_slots: npt.NDArray[np.int64] | None = None
    decoder: str | None = None  # paper only: Φ⁻¹ rule, "joint" or "argmax" (transfer.DECODERS)
    triggers: tuple[Trigger, ...] = ()  # format v2: each Fake's base index and offsets

    def licensee_keys(self) -> tuple[AnySecretKey, ...]:
        """Each licensee's secret key, in ``licensees`` order."""
        return tuple(self.family.keys)

    @property
    def num_triggers(self) -> int:
        return len(self.trigger_ciphertexts)

    def codebook(self) -> Ciphertexts:
        """Secure profile: the S fixed ciphertexts in (secret) slot order."""
        if self.class_slots is None or self.trigger_slots is None:
            raise ValueError("the paper profile has no codebook")
        shape = (self.output_size, *self.class_ciphertexts.shape[1:])
        book = np.zeros(shape, dtype=self.class_ciphertexts.dtype)
        book[self.class_slots] = self.class_ciphertexts
        book[self.trigger_slots] = self.trigger_ciphertexts
        return book

    def codewords(self) -> Ciphertexts:
        """The K + T ciphertexts the network is trained to emit (classes, then triggers)."""
        return np.concatenate([self.class_ciphertexts, self.trigger_ciphertexts])

    def transfer(self) -> CodebookTransfer | OneHotTransfer:
        """Φ / Φ⁻¹ of the base (unpermuted) model, with this plan's decoder."""
        prof = profile_of(self.scheme)
        if prof.uses_codebook:
            return prof.transfer(self.scheme, codebook=self.codebook())
        joint = self.decoder == "joint"
        return prof.transfer(self.scheme, codewords=self.codewords() if joint else None)

    def _targets(
        self, cts: Ciphertexts, slots: npt.NDArray[np.int64] | None
    ) -> npt.NDArray[np.float32]:
        prof = profile_of(self.scheme)
        if prof.uses_codebook:
            assert slots is not None
            return CodebookTransfer(self.codebook()).phi_slots(slots)
        onehot = prof.transfer(self.scheme)
        assert isinstance(onehot, OneHotTransfer)
        return onehot.phi(cts)

    def class_targets(self) -> npt.NDArray[np.float32]:
        """Φ(Enc(pk, M_y)) for y = 0..K-1: row y is the training target of class y."""
        return self._targets(self.class_ciphertexts, self.class_slots)

    def trigger_targets(self) -> npt.NDArray[np.float32]:
        """Φ(Fake_i): row i is the training target of trigger input i."""
        return self._targets(self.trigger_ciphertexts, self.trigger_slots)

    def manifest(
        self,
        *,
        input_spec: InputSpec,
        model_sha256: str,
        model_name: str = "encryip",
        model_file: str = "model.onnx",
    ) -> Manifest:
        """The base (unpermuted) manifest."""
        return Manifest(
            scheme=self.scheme,
            pk=self.family.pk,
            class_names=self.class_names,
            input=input_spec,
            output_name="logits",
            output_size=self.output_size,
            model_file=model_file,
            model_sha256=model_sha256,
            model_name=model_name,
            codebook=self.codebook() if profile_of(self.scheme).uses_codebook else None,
            decoder=self.decoder,
            codewords=self.codewords() if self.decoder == "joint" else None,
        )


def new_label_table(scheme: CSLiteV2, h: npt.NDArray[np.uint8], lo: int, hi: int) -> LabelTable:
    """A fresh random M_0 whose table has no two entries with the same 8-byte prefix."""
    while True:
        table = cached_table(
            scheme.group, scheme.num_classes, scheme.group.random_elements(1), h, lo, hi
        )
        try:
            table.ensure_built()
        except EncodingError:  # pragma: no cover - about 2^-40
            continue
        return table


#: A key family and its ciphertexts: (scheme, family, messages, Enc of each label, Fakes).
Crypto = tuple[AnyScheme, KeyFamily | KeyFamilyV2, Any, Ciphertexts, Ciphertexts]


def generate_v2(
    k: int, num_licensees: int, num_triggers: int, shift_range: int
) -> tuple[Crypto, tuple[Trigger, ...]]:
    """Secure format 2: Gen with the triggers' base indices, the label table, Enc, Fake."""
    scheme = make_scheme_v2(k, num_licensees, shift_range)
    triggers = scheme.make_triggers(num_triggers)
    family = scheme.gen(num_licensees, triggers)
    lo, hi = scheme.index_range(triggers)
    scheme = scheme.with_table(new_label_table(scheme, family.pk.h, lo, hi))
    messages = scheme.codec.messages(np.arange(k))
    class_cts = scheme.enc(family.pk, messages)
    trig_cts = scheme.fake(family.pk, scheme.codec, triggers)
    return (scheme, family, messages, class_cts, trig_cts), triggers


def generate_v1(scheme: CSLite, num_licensees: int, num_triggers: int) -> Crypto:
    """The paper's CS_lite (Z_p^*, or secure format 1 over ristretto255): Gen, Enc, Fake."""
    family = scheme.gen(num_licensees)
    codec = scheme.codec
    if isinstance(codec, HashLabelCodec):
        messages = codec.sample_messages(scheme.group)
    else:
        assert isinstance(codec, OffsetLabelCodec)
        messages = codec.message_of(np.arange(scheme.num_classes))
    class_cts = scheme.enc(family.pk, messages)
    trig_cts = scheme.fake(family.pk, num_triggers)
    return scheme, family, messages, class_cts, trig_cts


def plan_protection(
    profile: str,
    class_names: list[str],
    licensees: list[str],
    num_triggers: int = 32,
    decoder: str = "joint",
    *,
    secure_format: int = DEFAULT_SECURE_FORMAT,
    shift_range: int = DEFAULT_SHIFT_RANGE,
) -> ProtectionPlan:
    """Gen(P), one Enc per label, ``num_triggers`` Fakes, and (secure) a secret slot order.

    ``decoder`` (paper profile only): the Φ⁻¹ rule written into the manifest. The secure
    profile writes format ``secure_format`` (2 by default; 1 for the paper's CS_lite
    construction over ristretto255).
    """
    k = len(class_names)
    validate_licensee_names(list(licensees))
    if num_triggers < 0:
        raise ValueError("num_triggers must be >= 0")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}: expected one of {', '.join(DECODERS)}")
    prof = profile_of(profile)
    triggers: tuple[Trigger, ...] = ()
    if prof is SECURE and secure_format == 2:
        crypto, triggers = generate_v2(k, len(licensees), num_triggers, shift_range)
    else:
        SECURE.check_format(secure_format)
        crypto = generate_v1(make_scheme(profile, k), len(licensees), num_triggers)
    scheme, family, messages, class_cts, trig_cts = crypto
    size = prof.output_size(scheme, num_triggers)
    class_slots = trigger_slots = None
    if prof.uses_codebook:  # classes and triggers in a secret random slot order
        order = random_permutation(size)
        class_slots, trigger_slots = order[:k], order[k:]
    return ProtectionPlan(
        scheme,
        family,
        tuple(licensees),
        tuple(class_names),
        messages,
        class_cts,
        trig_cts,
        size,
        class_slots,
        trigger_slots,
        decoder=None if prof.uses_codebook else decoder,
        triggers=triggers,
    )
