"""Secure format v2: the algebra, the label table, native vs libsodium, key checks."""

from __future__ import annotations

import numpy as np
import pytest

from encryip_runtime.crypto import r255_native
from encryip_runtime.crypto.ristretto import Ristretto255
from encryip_runtime.crypto.scheme_v2 import (
    CSLiteV2,
    KeyFamilyV2,
    SecretKeyV2,
    Trigger,
    choose_width,
    max_agreement,
)
from encryip_runtime.exceptions import EncodingError, InvalidKeyError, LicenseeLimitError
from encryip_runtime.release.plan import new_label_table

K = 10


@pytest.fixture(scope="module")
def setup() -> tuple[CSLiteV2, KeyFamilyV2, tuple[Trigger, ...]]:
    scheme = CSLiteV2(K, choose_width(K, 5), shift_range=64)
    triggers = scheme.make_triggers(12)
    family = scheme.gen(6, triggers)
    lo, hi = scheme.index_range(triggers)
    return scheme.with_table(new_label_table(scheme, family.pk.h, lo, hi)), family, triggers


def test_width_from_classes_and_licensees() -> None:
    assert choose_width(10, 3) == 5  # 10^5 >= 100 * 1000
    assert choose_width(100, 1000) == 3  # at least 3 (enough distinct label rules)
    assert choose_width(10, 5000) == 6
    assert choose_width(2, 1000) == 17
    assert CSLiteV2(10, 4).max_licensees == 10**4 // 8 >= 1000
    assert max_agreement(32, 10) == 12 and max_agreement(32, 2) == 27


def test_classes_decrypt_for_every_key(setup: tuple[CSLiteV2, KeyFamilyV2, tuple]) -> None:
    scheme, family, _ = setup
    msgs = scheme.codec.messages(np.arange(K))
    cts = scheme.sampdist(family.pk, scheme.enc(family.pk, msgs))
    for key in family.keys:
        scheme.check_key(family.pk, key)
        assert scheme.decrypt_labels(key, cts).tolist() == list(range(K))
        idx, found = scheme.decrypt_indices(key, cts)
        assert found.all() and (idx % K == np.arange(K)).all()
        assert idx.min() >= 0 and idx.max() < K * scheme.shift_range


def test_fakes_decrypt_into_the_table_with_per_key_labels(
    setup: tuple[CSLiteV2, KeyFamilyV2, tuple[Trigger, ...]],
) -> None:
    scheme, family, triggers = setup
    fakes = scheme.fake(family.pk, scheme.codec, triggers)
    labels = []
    for key in family.keys:
        want = [tr.base_index(key.b) for tr in triggers]
        idx, found = scheme.decrypt_indices(key, fakes)
        assert found.all() and idx.tolist() == want
        shifted, found2 = scheme.decrypt_indices(key, scheme.sampdist(family.pk, fakes))
        assert found2.all() and ((shifted - idx) % K == 0).all()
        assert (idx >= scheme.codec.index_min).all()
        labels.append(scheme.decrypt_labels(key, fakes))
    # every pair of keys disagrees on most triggers (the b vectors were chosen so)
    limit = max_agreement(len(triggers), K)
    for i in range(len(labels)):
        for j in range(i):
            assert int((labels[i] == labels[j]).sum()) <= limit


def test_trigger_base_indices_stay_within_a_few_windows(
    setup: tuple[CSLiteV2, KeyFamilyV2, tuple[Trigger, ...]],
) -> None:
    scheme, _, triggers = setup
    for tr in triggers:
        for b in [(0,) * scheme.width, (K - 1,) * scheme.width]:
            q = tr.base_index(b) // K
            assert abs(q) <= scheme.width + 1


def test_sampdist_native_and_libsodium_give_the_same_bytes(
    setup: tuple[CSLiteV2, KeyFamilyV2, tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not r255_native.available():
        pytest.skip("native backend not built")
    scheme, family, _ = setup
    cts = scheme.enc(family.pk, scheme.codec.messages(np.arange(20) % K))
    scalars = scheme.shift_scalars(20)
    native = scheme.sampdist(family.pk, cts, scalars=scalars)
    dec_native = scheme.dec(family.keys[1], native)
    monkeypatch.setenv("ENCRYIP_NATIVE", "0")
    sodium = scheme.sampdist(family.pk, cts, scalars=scalars)
    assert np.array_equal(native, sodium)
    assert np.array_equal(scheme.dec(family.keys[1], sodium), dec_native)


def test_codebook_sampdist_one_call_matches_two_calls_and_libsodium(
    setup: tuple[CSLiteV2, KeyFamilyV2, tuple],
) -> None:
    """Native format 2 prepares one codebook and runs its n + 2 components in one C call
    (the last base on its own scalar r + K m). Same scalars, same bytes as the split
    two-call form and as libsodium; and it decrypts to the slot's label."""
    if not r255_native.has_split_slots():
        pytest.skip("native backend (with eip_sampdist_slots2) not built")
    scheme, family, _ = setup
    cb = scheme.enc(family.pk, scheme.codec.messages(np.arange(3 * K)))
    slots = np.array([0, 5, 29, 7, 7, 12] * 12)  # 72 rows: more than one encoding batch
    scalars = scheme.shift_scalars(len(slots))
    prepared = scheme.prepare_codebook(cb)
    assert not isinstance(prepared, tuple)
    one = scheme.sampdist_codebook(family.pk, prepared, slots, scalars)
    g = scheme.group
    split = (g.prepare_codebook(cb[:, :-1]), g.prepare_codebook(cb[:, -1:]))
    two = scheme.sampdist_codebook(family.pk, split, slots, scalars)
    assert np.array_equal(one, two)
    assert np.array_equal(one, scheme.sampdist(family.pk, cb[slots], scalars=scalars))
    sodium = CSLiteV2(K, scheme.width, scheme.shift_range, scheme.table, Ristretto255(False))
    assert sodium.group.backend == "libsodium"
    assert isinstance(sodium.prepare_codebook(cb), tuple)
    want = sodium.sampdist_codebook(family.pk, sodium.prepare_codebook(cb), slots, scalars)
    assert np.array_equal(one, want)
    assert np.array_equal(scheme.decrypt_labels(family.keys[1], one), slots % K)
    with pytest.raises(ValueError, match="out of range"):
        scheme.sampdist_codebook(family.pk, prepared, np.array([3 * K]))


def test_elements_outside_the_table_still_get_a_label(
    setup: tuple[CSLiteV2, KeyFamilyV2, tuple],
) -> None:
    scheme, family, _ = setup
    wrong = SecretKeyV2(12345, (1,) * scheme.width)
    cts = scheme.enc(family.pk, scheme.codec.messages(np.arange(K)))
    labels = scheme.decrypt_labels(wrong, cts)
    assert labels.shape == (K,) and ((labels >= 0) & (labels < K)).all()
    _, found = scheme.decrypt_indices(wrong, cts)
    assert not found.any()
    garbage = scheme.group.random_elements(50)
    assert ((scheme.codec.labels_of(garbage) >= 0) & (scheme.codec.labels_of(garbage) < K)).all()


def test_check_key_rejects(setup: tuple[CSLiteV2, KeyFamilyV2, tuple]) -> None:
    scheme, family, _ = setup
    key = family.keys[0]
    with pytest.raises(InvalidKeyError):
        scheme.check_key(family.pk, SecretKeyV2((key.a + 1) % (2**252), key.b))
    with pytest.raises(InvalidKeyError, match="out of range"):
        scheme.check_key(family.pk, SecretKeyV2(key.a, (K, *key.b[1:])))
    with pytest.raises(InvalidKeyError):
        scheme.check_key(family.pk, SecretKeyV2(key.a, key.b[:-1]))
    # another key of the family is valid; b alone does not make a key
    other = scheme.key_for(family, tuple((v + 1) % K for v in key.b))
    scheme.check_key(family.pk, other)
    with pytest.raises(InvalidKeyError):
        scheme.check_key(family.pk, SecretKeyV2(key.a, other.b))


def test_wire_width_and_validation(setup: tuple[CSLiteV2, KeyFamilyV2, tuple]) -> None:
    scheme, family, _ = setup
    cts = scheme.enc(family.pk, scheme.codec.messages(np.arange(3)))
    wire = scheme.to_wire(cts)
    assert wire.shape == (3, (scheme.width + 2) * 32)
    assert np.array_equal(scheme.from_wire(wire), cts)
    assert np.array_equal(scheme.from_wire([bytes(r) for r in wire]), cts)
    with pytest.raises(EncodingError, match=f"expected {scheme.ciphertext_size} bytes, got 96"):
        scheme.from_wire([bytes(wire[0][:96])])  # a format v1 ciphertext
    bad = wire.copy()
    bad[1, 32 * 2 + 31] |= 0x80
    with pytest.raises(EncodingError, match="component u3"):
        scheme.from_wire(bad)


def test_capacity_is_refused_clearly() -> None:
    scheme = CSLiteV2(2, 3)  # 2^3 / 8 = 1 licensee
    family = scheme.gen(1)
    with pytest.raises(LicenseeLimitError, match="at most 1"):
        scheme.add_licensee(family)


def test_a_thousand_licensees_fit(setup: tuple[CSLiteV2, KeyFamilyV2, tuple]) -> None:
    scheme = CSLiteV2(K, choose_width(K, 1000))
    triggers = scheme.make_triggers(32)
    family = KeyFamilyV2(
        scheme.gen(1).pk, 1, tuple(range(1, scheme.width + 1)), ()
    )  # keys are not checked here: only the b selection
    for _ in range(1000):
        family = scheme.add_licensee(family, triggers)
    labels = np.array([scheme.trigger_labels(k.b, triggers) for k in family.keys])
    agree = (labels[:, None, :] == labels[None, :, :]).sum(axis=2)
    np.fill_diagonal(agree, 0)
    assert int(agree.max()) <= max_agreement(32, K)
    assert len({k.b for k in family.keys}) == 1000


def test_label_table_native_and_libsodium_agree() -> None:
    from encryip_runtime.crypto.ristretto import Ristretto255
    from encryip_runtime.crypto.scheme_v2 import LabelTable

    if not r255_native.available():
        pytest.skip("native backend not built")
    native, sodium = Ristretto255(native=True), Ristretto255(native=False)
    m0, h = native.random_elements(1), native.random_elements(1)
    a = LabelTable(native, K, m0, h, -20, 300)._encodings()
    b = LabelTable(sodium, K, m0, h, -20, 300)._encodings()
    assert np.array_equal(a, b)
    # the table's entries are M_0 + i h
    assert np.array_equal(a[20 + 7], native.mul(m0, native.pow(h, 7))[0])


def test_scheme_with_table_pickles(setup: tuple[CSLiteV2, KeyFamilyV2, tuple]) -> None:
    """The exporter broadcasts its plan (scheme and table included) to every DDP rank."""
    import pickle

    scheme, family, _ = setup
    cts = scheme.sampdist(family.pk, scheme.enc(family.pk, scheme.codec.messages(np.arange(K))))
    scheme.decrypt_labels(family.keys[0], cts)  # the table is built (and locked) here
    again = pickle.loads(pickle.dumps(scheme))
    assert again.decrypt_labels(family.keys[0], cts).tolist() == list(range(K))
