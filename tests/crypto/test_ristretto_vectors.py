"""ristretto255 against RFC 9496 Appendix A (data files in tests/vectors/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encryip_runtime.crypto.ristretto import L, Ristretto255
from encryip_runtime.exceptions import EncodingError

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
MULTIPLES: list[str] = json.loads((VECTORS / "ristretto255_generator_multiples.json").read_text())[
    "multiples"
]
INVALID: list[tuple[str, str]] = [
    (kind, enc)
    for kind, encs in json.loads((VECTORS / "ristretto255_invalid_encodings.json").read_text())[
        "invalid"
    ].items()
    for enc in encs
]

G = Ristretto255()


def _row(hex_str: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_str), dtype=np.uint8).reshape(1, 32)


def test_vector_files_are_complete() -> None:
    assert len(MULTIPLES) == 16
    assert len(INVALID) == 29
    assert len({e for _, e in INVALID}) == 29
    assert all(len(bytes.fromhex(h)) == 32 for h in MULTIPLES + [e for _, e in INVALID])


@pytest.mark.parametrize("k", range(16))
def test_generator_multiple_by_scalar_mult(k: int) -> None:
    """[k]B through the fixed-base path (pow_fixed) and the generic path (pow)."""
    fixed = G.pow_fixed(G.generator(), G.scalars_from_ints([k]))
    generic = G.pow(G.generator(), k)
    assert G.to_json(fixed) == [MULTIPLES[k]]
    assert G.to_json(generic) == [MULTIPLES[k]]


@pytest.mark.parametrize("k", range(16))
def test_generator_multiple_by_addition(k: int) -> None:
    acc = G.identity(1)
    for _ in range(k):
        acc = G.mul(acc, G.generator())
    assert G.to_json(acc) == [MULTIPLES[k]]


@pytest.mark.parametrize("k", range(16))
def test_generator_multiple_decodes_and_round_trips(k: int) -> None:
    parsed = G.from_json([MULTIPLES[k]])
    assert G.to_json(G.from_bytes(G.to_bytes(parsed))) == [MULTIPLES[k]]


def test_generator_is_rfc_base_point_and_has_order_l() -> None:
    assert G.to_json(G.generator()) == [MULTIPLES[1]]
    assert G.to_json(G.pow(G.generator(), L)) == [MULTIPLES[0]]
    assert G.to_json(G.pow(G.generator(), L + 3)) == [MULTIPLES[3]]


@pytest.mark.parametrize(("kind", "encoding"), INVALID, ids=[f"{k}-{e[:8]}" for k, e in INVALID])
def test_invalid_encoding_rejected(kind: str, encoding: str) -> None:
    with pytest.raises(EncodingError, match="element 0"):
        G.from_bytes(_row(encoding))
    with pytest.raises(EncodingError, match="element 0"):
        G.from_json([encoding])


@pytest.mark.parametrize(("kind", "encoding"), INVALID[:6], ids=[e[:8] for _, e in INVALID[:6]])
def test_invalid_encoding_rejected_in_any_row(kind: str, encoding: str) -> None:
    good = [MULTIPLES[2], MULTIPLES[5], MULTIPLES[7]]
    with pytest.raises(EncodingError, match="element 2"):
        G.from_json([*good[:2], encoding, good[2]])


@pytest.mark.parametrize("k", range(1, 16))
def test_high_bit_set_is_rejected(k: int) -> None:
    """Canonical encodings have the top bit of byte 31 clear."""
    row = _row(MULTIPLES[k]).copy()
    row[0, 31] |= 0x80
    with pytest.raises(EncodingError):
        G.from_bytes(row)


def test_identity_encoding_is_accepted() -> None:
    """RFC 9496: the identity encodes as 32 zero bytes, a valid encoding."""
    assert G.equal(G.from_json([MULTIPLES[0]]), G.identity(1))
