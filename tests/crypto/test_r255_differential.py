"""ristretto255 against a pure-Python RFC 9496 model (tests/crypto/r255_model.py) that
shares no code with libsodium or our C: decoding (every rejection rule, including
encodings with s in [p, 2^255)), encoding, addition and scalar multiplication, on
both backends (native C and the libsodium fallback)."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from encryip_runtime.crypto import r255_native
from encryip_runtime.crypto.ristretto import Ristretto255
from encryip_runtime.exceptions import EncodingError

from . import r255_model as model

BACKENDS = [False, *([True] if r255_native.available() else [])]
RNG = np.random.default_rng(9496)


def _group(native: bool) -> Ristretto255:
    return Ristretto255(native=native)


def _rows(encodings: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(encodings), dtype=np.uint8).reshape(len(encodings), 32)


def _accepts(g: Ristretto255, enc: bytes) -> bool:
    try:
        g.from_bytes(_rows([enc]))
    except EncodingError:
        return False
    return True


_POINTS = [model.mul(secrets.randbelow(model.L), model.GENERATOR) for _ in range(8)]


def _points(n: int) -> list[model.Point]:
    return _POINTS[:n]


def edge_encodings() -> list[bytes]:
    """Encodings on every rejection rule's border."""
    out = []
    # s in [p, 2^255): non-canonical field elements (the bottom and top of the range,
    # and p + s for the valid small s, which decode to the same field element s).
    for s in (model.P, model.P + 1, model.P + 2, 2**255 - 2, 2**255 - 1):
        out.append(s.to_bytes(32, "little"))
    out += [(model.P + s).to_bytes(32, "little") for s in range(0, 19)]
    out += [
        (model.P + secrets.randbelow(2**255 - model.P)).to_bytes(32, "little") for _ in range(20)
    ]
    # the top bit set on valid encodings (s >= 2^255)
    for pt in [*_points(6), model.GENERATOR]:
        raw = bytearray(model.encode(pt))
        raw[31] |= 0x80
        out.append(bytes(raw))
    # negative (odd) s, small s, and s = p - 1 (odd: negative)
    out += [s.to_bytes(32, "little") for s in (1, 2, 3, 4, 5, model.P - 1, model.P - 2)]
    out.append(bytes(32))  # the identity
    return out


def test_the_model_itself_matches_rfc_9496_appendix_a() -> None:
    import json
    from pathlib import Path

    vectors = Path(__file__).resolve().parent.parent / "vectors"
    multiples = json.loads((vectors / "ristretto255_generator_multiples.json").read_text())
    for k, enc in enumerate(multiples["multiples"]):
        assert model.encode(model.mul(k, model.GENERATOR)).hex() == enc
        assert model.encode(model.element(bytes.fromhex(enc))).hex() == enc
    invalid = json.loads((vectors / "ristretto255_invalid_encodings.json").read_text())
    for encs in invalid["invalid"].values():
        assert all(model.decode(bytes.fromhex(e)) is None for e in encs)
    assert model.mul(model.L, model.GENERATOR) == model.IDENTITY


@pytest.mark.parametrize("native", BACKENDS)
def test_decoding_agrees_with_the_model(native: bool) -> None:
    g = _group(native)
    cases = edge_encodings() + [secrets.token_bytes(32) for _ in range(200)]
    cases += [model.encode(p) for p in _points(8)]
    accepted_by_model = 0
    for enc in cases:
        want = model.decode(enc) is not None
        accepted_by_model += want
        assert _accepts(g, enc) == want, enc.hex()
        if native:
            assert r255_native.is_valid(enc) == want, enc.hex()
    assert 8 <= accepted_by_model < len(cases)
    in_range = [e for e in cases if model.P <= int.from_bytes(e, "little") < 2**255]
    assert len(in_range) >= 40 and all(not _accepts(g, e) for e in in_range)


@pytest.mark.parametrize("native", BACKENDS)
def test_group_law_agrees_with_the_model(native: bool) -> None:
    g = _group(native)
    pts = [*_points(8), model.IDENTITY, model.GENERATOR]
    xs = _rows([model.encode(p) for p in pts])
    ys = _rows([model.encode(p) for p in reversed(pts)])
    sums = g.mul(xs, ys)
    diffs = g.div(xs, ys)
    for i, (a, b) in enumerate(zip(pts, reversed(pts), strict=True)):
        assert bytes(sums[i]) == model.encode(model.add(a, b))
        assert bytes(diffs[i]) == model.encode(model.add(a, model.neg(b)))


EDGE_SCALARS = [0, 1, 2, 3, model.L - 1, model.L - 2, 2**252, 2**252 - 1]


@pytest.mark.parametrize("native", BACKENDS)
def test_scalar_multiplication_agrees_with_the_model(native: bool) -> None:
    g = _group(native)
    base_pt = _points(1)[0]
    base = _rows([model.encode(base_pt)])
    scalars = EDGE_SCALARS + [secrets.randbelow(model.L) for _ in range(8)]
    got = g.pow_fixed(base, g.scalars_from_ints(scalars))  # >= 16 rows: the native table
    for k, row in zip(scalars, got, strict=True):
        assert bytes(row) == model.encode(model.mul(k, base_pt)), k
    for k in EDGE_SCALARS[:5]:
        assert bytes(g.pow(base, k)[0]) == model.encode(model.mul(k, base_pt)), k


@pytest.mark.parametrize("native", BACKENDS)
def test_an_invalid_point_raises_never_becomes_the_identity(native: bool) -> None:
    """The libsodium fallback mapped an invalid input point to the identity (its
    scalarmult fails alike for both); every path must raise instead."""
    g = _group(native)
    bad = [e for e in edge_encodings() if model.decode(e) is None][:8]
    for enc in bad:
        row = _rows([enc])
        with pytest.raises(EncodingError):
            g.pow(row, 5)
        with pytest.raises(EncodingError):
            g.pow_fixed(row, g.scalars_from_ints([5]))
        with pytest.raises(EncodingError):
            g.pow_fixed(row, g.scalars_from_ints(list(range(1, 40))))
    identity = _rows([bytes(32)])
    assert not g.pow(identity, 5).any()  # the identity itself stays valid: 5 * 0 = 0
