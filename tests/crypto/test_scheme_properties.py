"""Property tests of CS_lite (paper Figure 1) in both profiles."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encryip_runtime.crypto import CSLite, KeyFamily, SecretKey, make_scheme
from encryip_runtime.crypto.labels import HashLabelCodec, OffsetLabelCodec
from encryip_runtime.crypto.ristretto import L
from encryip_runtime.exceptions import InvalidKeyError, LicenseeLimitError

#: (profile, K): paper at three sizes, secure at one (each secure op costs ~50-150 µs).
CASES = [("paper", 2), ("paper", 10), ("paper", 100), ("secure", 10)]
IDS = [f"{p}-K{k}" for p, k in CASES]

PAPER = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECURE = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def scheme(profile: str, k: int) -> CSLite:
    return make_scheme(profile, k)


def cfg(profile: str) -> settings:
    return PAPER if profile == "paper" else SECURE


def messages_from(s: CSLite, exponents: list[int]) -> Any:
    """Arbitrary group elements g1^e (covers the whole group in both profiles)."""
    g = s.group
    return g.pow_fixed(g.generator(), g.scalars_from_ints(exponents))


def is_real(s: CSLite, fam: KeyFamily, cts: Any) -> bool:
    """A well-formed ciphertext has u2 = u1^t (same r in both)."""
    return s.group.equal(s.group.pow(cts[:, 0], fam.t), cts[:, 1])


exponents = st.lists(st.integers(min_value=0, max_value=2**256), min_size=1, max_size=12)
licensees = st.integers(min_value=1, max_value=4)


def run(profile: str, test: Any) -> None:
    cfg(profile)(test)()


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_dec_enc_is_identity_for_every_key(profile: str, k: int) -> None:
    s = scheme(profile, k)

    @given(exps=exponents, n_keys=licensees)
    def prop(exps: list[int], n_keys: int) -> None:
        fam = s.gen(min(n_keys, s.max_licensees))
        m = messages_from(s, exps)
        cts = s.enc(fam.pk, m)
        assert cts.shape[:2] == (len(exps), 3)
        assert is_real(s, fam, cts)
        for sk in fam.keys:
            s.check_key(fam.pk, sk)
            assert s.group.equal(s.dec(sk, cts), m)

    run(profile, prop)


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_sampdist_preserves_decryption(profile: str, k: int) -> None:
    s = scheme(profile, k)

    @given(exps=exponents, n_keys=licensees, fake=st.booleans())
    def prop(exps: list[int], n_keys: int, fake: bool) -> None:
        fam = s.gen(min(n_keys, s.max_licensees))
        cts = s.fake(fam.pk, len(exps)) if fake else s.enc(fam.pk, messages_from(s, exps))
        again = s.sampdist(fam.pk, cts)
        twice = s.sampdist(fam.pk, again)
        assert again.shape == cts.shape
        assert is_real(s, fam, again) == (not fake) or len(exps) == 0
        for sk in fam.keys:
            want = s.dec(sk, cts)
            assert s.group.equal(s.dec(sk, again), want)
            assert s.group.equal(s.dec(sk, twice), want)

    run(profile, prop)


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_sampdist_with_precomputed_rerandomizers(profile: str, k: int) -> None:
    """The pool path (rerandomizers handed in) decrypts like the inline path."""
    s = scheme(profile, k)
    fam = s.gen(2)
    m = s.group.random_elements(64)
    cts = s.enc(fam.pk, m)
    out = s.sampdist(fam.pk, cts, s.rerandomizers(fam.pk, len(cts)))
    assert is_real(s, fam, out)
    for sk in fam.keys:
        assert s.group.equal(s.dec(sk, out), m)
    with pytest.raises(ValueError, match="re-randomisers"):
        s.sampdist(fam.pk, cts, s.rerandomizers(fam.pk, len(cts) - 1))


def test_sampdist_components_are_fresh_secure() -> None:
    """Every component of every row changes (a repeat would mean r = 0, prob 2^-252)."""
    s = scheme("secure", 10)
    fam = s.gen(1)
    cts = s.enc(fam.pk, s.group.random_elements(32))
    a, b = s.sampdist(fam.pk, cts), s.sampdist(fam.pk, cts)
    for out in (a, b):
        for comp in range(3):
            assert not (out[:, comp] == cts[:, comp]).all(axis=1).any()
    assert not (a == b).all(axis=(1, 2)).any()


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_sampdist_components_are_fresh_paper(k: int) -> None:
    """In Z_p^* r = 0 happens with probability 1/(p-1); otherwise all three move."""
    s = scheme("paper", k)
    n = s.group.order
    fam = s.gen(1)
    rows = 20_000
    cts = s.enc(fam.pk, s.group.random_elements(rows))
    out = s.sampdist(fam.pk, cts)
    same = out == cts
    # u1 fixed  <=>  r = 0  <=>  every component fixed
    np.testing.assert_array_equal(same[:, 0], same.all(axis=1))
    rate = same[:, 0].mean()
    sd = np.sqrt((1 / n) * (1 - 1 / n) / rows)
    assert abs(rate - 1 / n) < 6 * sd + 1e-9
    # r is uniform: u1 = g1^r covers the group evenly
    assert np.bincount(s.group.log(out[:, 0]), minlength=n).min() > 0


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_every_pair_of_keys_decrypts_a_fake_differently(profile: str, k: int) -> None:
    s = scheme(profile, k)

    @given(n_keys=st.integers(min_value=2, max_value=6), count=st.integers(1, 6))
    def prop(n_keys: int, count: int) -> None:
        fam = s.gen(min(n_keys, s.max_licensees))
        fakes = s.fake(fam.pk, count)
        assert not is_real(s, fam, fakes)
        dec = [s.group.to_bytes(s.dec(sk, fakes)) for sk in fam.keys]
        for i in range(len(dec)):
            for j in range(i + 1, len(dec)):
                # differently on EVERY fake row, not just on some
                assert not (dec[i] == dec[j]).all(axis=1).any()

    run(profile, prop)


def test_all_licensees_of_a_full_paper_family_disagree_on_fakes() -> None:
    """p = 11: all 10 possible licensees, pairwise different on every fake."""
    s = scheme("paper", 10)
    fam = s.gen(10)
    assert len({k.b for k in fam.keys}) == 10
    fakes = s.fake(fam.pk, 50)
    dec = np.stack([s.dec(sk, fakes) for sk in fam.keys])  # (keys, fakes)
    for col in dec.T:
        assert len(set(col.tolist())) == 10


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_added_licensee_decrypts_old_ciphertexts_and_others_unchanged(profile: str, k: int) -> None:
    s = scheme(profile, k)

    @given(exps=exponents, n_keys=st.integers(1, 3))
    def prop(exps: list[int], n_keys: int) -> None:
        fam = s.gen(min(n_keys, s.max_licensees - 1))
        m = messages_from(s, exps)
        old_cts = s.sampdist(fam.pk, s.enc(fam.pk, m))
        old_fakes = s.fake(fam.pk, 4)
        before = [s.dec(sk, old_fakes) for sk in fam.keys]
        bigger = s.add_licensee(fam)
        assert bigger.pk == fam.pk
        assert bigger.t == fam.t
        assert bigger.keys[: len(fam.keys)] == fam.keys
        new = bigger.keys[-1]
        assert new.b not in {sk.b for sk in fam.keys}
        s.check_key(fam.pk, new)
        assert s.group.equal(s.dec(new, old_cts), m)
        for sk, dec in zip(fam.keys, before, strict=True):
            assert s.group.equal(s.dec(sk, old_fakes), dec)
        assert (
            not (s.group.to_bytes(s.dec(new, old_fakes)) == s.group.to_bytes(before[0]))
            .all(axis=1)
            .any()
        )

    run(profile, prop)


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_wrong_key_fails_check_key(profile: str, k: int) -> None:
    s = scheme(profile, k)
    n = s.group.order

    @given(
        delta=st.integers(min_value=1, max_value=n - 1),
        which=st.sampled_from(["a", "b", "both"]),
        idx=st.integers(0, 2),
    )
    def prop(delta: int, which: str, idx: int) -> None:
        fam = s.gen(min(3, s.max_licensees))
        sk = fam.keys[idx % len(fam.keys)]
        if which == "a":
            bad = SecretKey((sk.a + delta) % n, sk.b)
        elif which == "b":
            # g2^delta != 1 needs t*delta != 0 mod n; t is a unit, delta != 0
            bad = SecretKey(sk.a, (sk.b + delta) % n)
        else:
            # off the line a + t b = s: shift a by delta - t*delta' with the sum nonzero
            bad = SecretKey((sk.a + delta) % n, (sk.b + delta) % n)
            if (delta + fam.t * delta) % n == 0:
                return
        with pytest.raises(InvalidKeyError):
            s.check_key(fam.pk, bad)
        # a key of another family fails too (unless, in a tiny group, it lands on our line)
        foreign = s.gen(1).root
        if _on_line(s, fam, foreign):
            return
        with pytest.raises(InvalidKeyError):
            s.check_key(fam.pk, foreign)

    run(profile, prop)


def _on_line(s: CSLite, fam: KeyFamily, sk: SecretKey) -> bool:
    """g1^a g2^b == h, computed independently of check_key (via t)."""
    n = s.group.order
    return (sk.a + fam.t * sk.b) % n == (fam.root.a + fam.t * fam.root.b) % n


@pytest.mark.parametrize(("profile", "k"), CASES, ids=IDS)
def test_out_of_range_key_scalars_fail_check_key(profile: str, k: int) -> None:
    s = scheme(profile, k)
    fam = s.gen(1)
    sk = fam.root
    n = s.group.order
    for bad in (SecretKey(sk.a + n, sk.b), SecretKey(sk.a, sk.b + n), SecretKey(-1, sk.b)):
        with pytest.raises(InvalidKeyError, match="out of range"):
            s.check_key(fam.pk, bad)


@pytest.mark.parametrize("k", [2, 10, 100])
def test_paper_refuses_more_than_p_minus_1_licensees(k: int) -> None:
    s = scheme("paper", k)
    n = s.group.order
    assert s.max_licensees == n
    with pytest.raises(LicenseeLimitError, match=str(n)):
        s.gen(n + 1)
    if n <= 100:
        full = s.gen(n)
        assert len({sk.b for sk in full.keys}) == n
        with pytest.raises(LicenseeLimitError):
            s.add_licensee(full)


def test_secure_allows_many_licensees() -> None:
    s = scheme("secure", 10)
    assert s.max_licensees == L
    fam = s.gen(12)  # more than p - 1 = 10 of the paper profile
    assert len({sk.b for sk in fam.keys}) == 12


@pytest.mark.parametrize(("k", "p", "g1"), [(10, 11, 2), (100, 101, 2), (1000, 1009, 11)])
def test_paper_parameters_match_the_paper(k: int, p: int, g1: int) -> None:
    s = scheme("paper", k)
    assert s.group.order + 1 == p
    assert int(s.group.generator()[0]) == g1


def _order_mod(g: int, p: int) -> int:
    x, e = g % p, 1
    while x != 1:
        x, e = x * g % p, e + 1
    return e


@pytest.mark.parametrize("k", [2, 3, 10, 11, 50, 100, 200, 1000])
def test_paper_prime_and_generator_by_definition(k: int) -> None:
    """p = the smallest prime with p - 1 >= K; g1 = the smallest primitive root mod p."""
    s = scheme("paper", k)
    p = s.group.order + 1
    assert all(any(q % d == 0 for d in range(2, q)) for q in range(max(k + 1, 2), p))
    assert all(p % d for d in range(2, p))
    g1 = int(s.group.generator()[0])
    assert _order_mod(g1, p) == p - 1
    assert all(_order_mod(c, p) != p - 1 for c in range(2, g1))


@pytest.mark.parametrize("k", [2, 10, 100])
def test_paper_labels_round_trip(k: int) -> None:
    s = scheme("paper", k)
    assert isinstance(s.codec, OffsetLabelCodec)
    fam = s.gen(min(3, s.max_licensees))
    y = np.arange(k)
    cts = s.sampdist(fam.pk, s.enc(fam.pk, s.codec.message_of(y)))
    for sk in fam.keys:
        np.testing.assert_array_equal(s.decrypt_labels(sk, cts), y)
    # every element decodes to some label
    every = np.arange(1, s.group.order + 1)
    assert set(s.codec.labels_of(every).tolist()) == set(range(k))


def test_secure_labels_round_trip() -> None:
    s = scheme("secure", 10)
    assert isinstance(s.codec, HashLabelCodec)
    fam = s.gen(2)
    msgs = s.codec.sample_messages(s.group)
    np.testing.assert_array_equal(s.codec.labels_of(msgs), np.arange(10))
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    cts = s.sampdist(fam.pk, s.enc(fam.pk, msgs[y]))
    for sk in fam.keys:
        np.testing.assert_array_equal(s.decrypt_labels(sk, cts), y)


@pytest.mark.parametrize("bad", [0, 1, -3, True, 2.0, "10"])
def test_make_scheme_rejects_bad_class_counts(bad: Any) -> None:
    with pytest.raises(ValueError):
        make_scheme("paper", bad)


def test_make_scheme_rejects_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        make_scheme("fast", 10)


def test_secret_key_repr_hides_scalars() -> None:
    s = scheme("secure", 10)
    fam = s.gen(1)
    text = repr(fam) + repr(fam.root)
    assert str(fam.root.a) not in text and str(fam.t) not in text


@pytest.mark.parametrize("profile,k", [("paper", 2), ("paper", 10), ("secure", 10)])
def test_gen_never_makes_an_identity_public_key_part(profile: str, k: int) -> None:
    """Every loader refuses g2 or h = identity, so Gen must never produce one: in the
    paper profile's small groups h = g1^a g2^b = 1 is a likely draw (1 in 2 for K = 2)."""
    s = make_scheme(profile, k)
    one = s.group.identity(1)
    for _ in range(200 if profile == "paper" else 3):
        pk = s.gen(1).pk
        assert not s.group.equal(pk.h, one) and not s.group.equal(pk.g2, one)
