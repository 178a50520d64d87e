"""Encodings at every boundary: round trips, and rejection with EncodingError."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encryip_runtime.crypto import CSLite, make_scheme
from encryip_runtime.crypto.ristretto import L
from encryip_runtime.exceptions import EncodingError, FormatError
from encryip_runtime.formats.common import (
    ciphertexts_from_json,
    ciphertexts_to_json,
    pk_from_fields,
    pk_to_json,
    sk_from_fields,
    sk_to_json,
)
from encryip_runtime.formats.jsonio import Fields

PROFILES = [("paper", 10), ("paper", 1000), ("secure", 10)]
IDS = ["paper-K10", "paper-K1000", "secure-K10"]


@cache
def scheme(profile: str, k: int) -> CSLite:
    return make_scheme(profile, k)


# -- elements -----------------------------------------------------------------


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
def test_element_round_trips(profile: str, k: int) -> None:
    g = scheme(profile, k).group
    x = g.random_elements(200)
    b = g.to_bytes(x)
    assert b.dtype == np.uint8 and b.shape == (200, g.element_size)
    assert g.equal(g.from_bytes(b), x)
    js = g.to_json(x)
    assert g.equal(g.from_json(js), x)
    assert g.to_json(g.from_json(js)) == js


def test_paper_elements_are_big_endian_uint16() -> None:
    g = scheme("paper", 1000).group
    b = g.to_bytes(np.array([1, 258, 1008]))
    assert b.tolist() == [[0, 1], [1, 2], [3, 240]]
    assert g.to_json(np.array([1, 258])) == [1, 258]


def test_secure_elements_are_hex_of_32_bytes() -> None:
    g = scheme("secure", 10).group
    (h,) = g.to_json(g.generator())
    assert h == "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"


@pytest.mark.parametrize("bad", [0, 11, 12, 255, 65535])
def test_paper_rejects_non_elements_in_bytes(bad: int) -> None:
    g = scheme("paper", 10).group
    raw = np.array([[0, 3], [bad >> 8, bad & 0xFF]], dtype=np.uint8)
    with pytest.raises(EncodingError, match=r"element 1: .*not an element of Z_11\^\*"):
        g.from_bytes(raw)


@pytest.mark.parametrize("bad", [0, -1, 11, 1009, 2**63, 2**70, -(2**70)])
def test_paper_rejects_non_elements_in_json(bad: int) -> None:
    g = scheme("paper", 10).group
    with pytest.raises(EncodingError, match="element 1"):
        g.from_json([3, bad])


@pytest.mark.parametrize("bad", [True, 3.0, "3", None, [3]])
def test_paper_rejects_non_integers_in_json(bad: Any) -> None:
    g = scheme("paper", 10).group
    with pytest.raises(EncodingError, match="element 0: expected an integer"):
        g.from_json([bad])


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
@pytest.mark.parametrize(
    "shape_dtype",
    [((3,), np.uint8), ((3, 1), np.uint8), ((3, 33), np.uint8), ((3, 2, 1), np.uint8), "dtype"],
)
def test_from_bytes_rejects_wrong_shapes_and_dtypes(profile: str, k: int, shape_dtype: Any) -> None:
    g = scheme(profile, k).group
    if shape_dtype == "dtype":
        data: Any = np.zeros((3, g.element_size), dtype=np.int16)
    else:
        shape, dt = shape_dtype
        data = np.zeros(shape, dtype=dt)
    with pytest.raises(EncodingError, match="expected"):
        g.from_bytes(data)


@pytest.mark.parametrize("nbytes", [0, 1, 31, 33, 64])
def test_secure_rejects_wrong_lengths_in_json(nbytes: int) -> None:
    g = scheme("secure", 10).group
    with pytest.raises(EncodingError, match=f"element 0: expected 32 bytes, got {nbytes}"):
        g.from_json(["ab" * nbytes])


@pytest.mark.parametrize("bad", ["zz" * 32, "abc", "0x" + "00" * 31])
def test_secure_rejects_bad_hex(bad: str) -> None:
    g = scheme("secure", 10).group
    with pytest.raises(EncodingError, match="element 0"):
        g.from_json([bad])


@pytest.mark.parametrize("bad", [5, None, b"\x00" * 32, ["00"]])
def test_secure_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(EncodingError, match="element 0: expected a hex string"):
        scheme("secure", 10).group.from_json([bad])


@pytest.mark.parametrize("profile", ["paper", "secure"])
def test_from_json_needs_a_list(profile: str) -> None:
    with pytest.raises(EncodingError):
        scheme(profile, 10).group.from_json("01")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32))
def test_secure_from_bytes_accepts_only_what_reencodes_identically(raw: bytes) -> None:
    """Any accepted 32 bytes must be the canonical encoding of the element it decodes to:
    decode -> (x + 0) -> encode gives back the same bytes."""
    g = scheme("secure", 10).group
    row = np.frombuffer(raw, dtype=np.uint8).reshape(1, 32)
    try:
        x = g.from_bytes(row)
    except EncodingError:
        return
    assert g.to_bytes(g.mul(x, g.identity(1))).tobytes() == raw


@pytest.mark.parametrize("k", [2, 10, 100])
def test_every_paper_element_survives_the_wire(k: int) -> None:
    g = scheme("paper", k).group
    every = np.arange(1, g.order + 1)
    assert g.equal(g.from_bytes(g.to_bytes(every)), every)


# -- scalars ------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(k=st.integers(min_value=0, max_value=L - 1))
def test_secure_scalar_round_trip(k: int) -> None:
    g = scheme("secure", 10).group
    js = g.scalar_to_json(k)
    assert isinstance(js, str) and len(js) == 64
    assert bytes.fromhex(js) == k.to_bytes(32, "little")
    assert g.scalar_from_json(js) == k


@pytest.mark.parametrize("k", [L, L + 1, 2**253, 2**256 - 1])
def test_secure_scalar_at_or_above_l_rejected(k: int) -> None:
    g = scheme("secure", 10).group
    with pytest.raises(EncodingError, match="not reduced mod L"):
        g.scalar_from_json(k.to_bytes(32, "little").hex())


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("00" * 31, "32 bytes, got 31"),
        ("00" * 33, "32 bytes, got 33"),
        ("", "32 bytes, got 0"),
        ("g0" * 32, "not valid hex"),
        (5, "hex string"),
        (None, "hex string"),
    ],
)
def test_secure_scalar_malformed_rejected(bad: Any, match: str) -> None:
    with pytest.raises(EncodingError, match=match):
        scheme("secure", 10).group.scalar_from_json(bad)


@pytest.mark.parametrize("k", [10, 1000])
def test_paper_scalar_round_trip_and_range(k: int) -> None:
    g = scheme("paper", k).group
    n = g.order
    for v in (0, 1, n - 1):
        assert g.scalar_from_json(g.scalar_to_json(v)) == v
    for bad in (n, n + 1, -1, 2**80):
        with pytest.raises(EncodingError, match="out of range"):
            g.scalar_from_json(bad)
    for bad in (True, 1.0, "1", None):
        with pytest.raises(EncodingError, match="must be an integer"):
            g.scalar_from_json(bad)


# -- ciphertexts on the wire ----------------------------------------------------


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
def test_wire_round_trip(profile: str, k: int) -> None:
    s = scheme(profile, k)
    fam = s.gen(1)
    cts = s.sampdist(fam.pk, s.enc(fam.pk, s.group.random_elements(50)))
    wire = s.to_wire(cts)
    assert wire.dtype == np.uint8 and wire.shape == (50, s.ciphertext_size)
    assert s.ciphertext_size == (6 if profile == "paper" else 96)
    for form in (wire, wire.tobytes(), [bytes(r) for r in wire]):
        back = s.from_wire(form)
        np.testing.assert_array_equal(back, cts)
    # layout: u1 || u2 || u3
    es = s.group.element_size
    for comp in range(3):
        np.testing.assert_array_equal(
            wire[:, comp * es : (comp + 1) * es], s.group.to_bytes(cts[:, comp])
        )


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
def test_wire_rejects_wrong_widths(profile: str, k: int) -> None:
    s = scheme(profile, k)
    w = s.ciphertext_size
    with pytest.raises(EncodingError, match="not a multiple"):
        s.from_wire(b"\x01" * (w + 1))
    with pytest.raises(EncodingError, match=f"ciphertext 1: expected {w} bytes, got {w - 1}"):
        s.from_wire([b"\x01" * w, b"\x01" * (w - 1)])
    with pytest.raises(EncodingError, match="ciphertext 0: expected"):
        s.from_wire(["x" * w])  # type: ignore[list-item]
    with pytest.raises(EncodingError, match="expected uint8"):
        s.from_wire(np.zeros((2, w + 2), dtype=np.uint8))
    with pytest.raises(EncodingError, match="expected uint8"):
        s.from_wire(np.zeros((2, w), dtype=np.float32))


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
@pytest.mark.parametrize("component", [0, 1, 2])
def test_wire_names_component_and_row_of_an_invalid_element(
    profile: str, k: int, component: int
) -> None:
    s = scheme(profile, k)
    fam = s.gen(1)
    wire = s.to_wire(s.enc(fam.pk, s.group.random_elements(4))).copy()
    es = s.group.element_size
    bad = (
        np.zeros(es, dtype=np.uint8)  # the element 0 is not in Z_p^*
        if profile == "paper"
        else np.frombuffer(bytes.fromhex("ec" + "ff" * 30 + "7f"), dtype=np.uint8)  # s = -1
    )
    wire[2, component * es : (component + 1) * es] = bad
    with pytest.raises(EncodingError, match=rf"component u{component + 1}: element 2"):
        s.from_wire(wire)


def test_secure_wire_rejects_high_bit_variant() -> None:
    """A second encoding of a valid element (bit 255 set) must not be accepted."""
    s = scheme("secure", 10)
    fam = s.gen(1)
    wire = s.to_wire(s.enc(fam.pk, s.group.random_elements(2))).copy()
    wire[1, 95] |= 0x80
    with pytest.raises(EncodingError, match="component u3: element 1"):
        s.from_wire(wire)


# -- JSON forms of pk / sk / ciphertexts -----------------------------------------


def _fields(doc: Any) -> Fields:
    return Fields(doc, "test.json", "")


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
def test_json_forms_round_trip(profile: str, k: int) -> None:
    s = scheme(profile, k)
    fam = s.gen(2)
    cts = s.fake(fam.pk, 5)
    doc = {
        "pk": pk_to_json(s, fam.pk),
        "sk": sk_to_json(s, fam.keys[1]),
        "cts": ciphertexts_to_json(s, cts),
    }
    f = _fields(doc)
    assert pk_from_fields(s, f) == fam.pk
    assert sk_from_fields(s, f) == fam.keys[1]
    np.testing.assert_array_equal(ciphertexts_from_json(s, f, "cts"), cts)
    if profile == "paper":
        assert all(isinstance(v, int) for v in doc["pk"].values())
        assert all(isinstance(v, int) for v in doc["sk"].values())
    else:
        assert all(isinstance(v, str) and len(v) == 64 for v in doc["pk"].values())
        assert all(isinstance(v, str) and len(v) == 64 for v in doc["sk"].values())
    empty = ciphertexts_from_json(s, _fields({"cts": []}), "cts")
    assert len(empty) == 0


@pytest.mark.parametrize(("profile", "k"), PROFILES, ids=IDS)
def test_json_forms_name_the_field(profile: str, k: int) -> None:
    s = scheme(profile, k)
    fam = s.gen(1)
    pk = pk_to_json(s, fam.pk)
    bad_el: Any = 0 if profile == "paper" else "ec" + "ff" * 30 + "7f"
    with pytest.raises(FormatError, match=r"test.json: field 'pk.h'"):
        pk_from_fields(s, _fields({"pk": {**pk, "h": bad_el}}))
    with pytest.raises(FormatError, match=r"field 'pk.g2'"):
        pk_from_fields(s, _fields({"pk": {k: v for k, v in pk.items() if k != "g2"}}))
    with pytest.raises(FormatError, match=r"field 'pk.g1'.*generator"):
        not_g1 = (
            1 if profile == "paper" else s.group.to_json(s.group.pow(s.group.generator(), 2))[0]
        )
        pk_from_fields(s, _fields({"pk": {**pk, "g1": not_g1}}))
    sk = sk_to_json(s, fam.root)
    bad_scalar: Any = s.group.order if profile == "paper" else L.to_bytes(32, "little").hex()
    with pytest.raises(FormatError, match=r"field 'sk.b'"):
        sk_from_fields(s, _fields({"sk": {**sk, "b": bad_scalar}}))
    cts = ciphertexts_to_json(s, s.fake(fam.pk, 3))
    cts[1][2] = bad_el
    with pytest.raises(FormatError, match=r"field 'cts'.*element 1"):
        ciphertexts_from_json(s, _fields({"cts": cts}), "cts")
    with pytest.raises(FormatError, match=r"field 'cts\[0\]'"):
        ciphertexts_from_json(s, _fields({"cts": [cts[0][:2]]}), "cts")
