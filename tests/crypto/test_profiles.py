"""The Profile objects: what each crypto profile decides, asked of one object."""

from __future__ import annotations

import numpy as np
import pytest

from encryip_runtime.crypto.profiles import (
    PAPER,
    PROFILES,
    SECURE,
    make_scheme,
    make_scheme_v2,
    profile_of,
)
from encryip_runtime.transfer import CodebookTransfer, OneHotTransfer


def test_lookup_by_name_and_by_object() -> None:
    assert PROFILES == ("paper", "secure")
    assert profile_of("paper") is PAPER and profile_of("secure") is SECURE
    assert profile_of(make_scheme("paper", 10)) is PAPER
    assert profile_of(make_scheme_v2(10, 2)) is SECURE  # format v2 is the secure profile
    assert profile_of(SECURE) is SECURE
    with pytest.raises(ValueError, match="unknown profile 'ecc': expected one of paper, secure"):
        profile_of("ecc")


def test_paper_layout() -> None:
    scheme = make_scheme("paper", 10)
    p = scheme.group.order + 1
    assert PAPER.output_size(scheme, 32) == 3 * p
    assert PAPER.block_width(3 * p) == p
    assert isinstance(PAPER.transfer(scheme), OneHotTransfer)
    perm = PAPER.licensee_permutation(3 * p)
    # shuffled inside each block: the file keeps the paper's three-block layout
    for b in range(3):
        assert sorted(perm[b * p : (b + 1) * p]) == list(range(b * p, (b + 1) * p))
    assert PAPER.chance_per_trigger(scheme) == -(-scheme.group.order // 10) / scheme.group.order


def test_secure_layout() -> None:
    scheme = make_scheme("secure", 10)
    assert SECURE.output_size(scheme, 32) == 42
    assert SECURE.block_width(42) is None
    assert SECURE.uses_codebook and not PAPER.uses_codebook
    with pytest.raises(ValueError, match="needs the codebook"):
        SECURE.transfer(scheme)
    book = scheme.enc(scheme.gen(1).pk, scheme.codec.sample_messages(scheme.group))
    assert isinstance(SECURE.transfer(scheme, codebook=book), CodebookTransfer)
    assert sorted(SECURE.licensee_permutation(42)) == list(range(42))
    assert SECURE.formats == (1, 2) and SECURE.default_format == 2
    SECURE.check_format(1)
    with pytest.raises(ValueError, match="unknown secure format 3"):
        SECURE.check_format(3)
    assert np.isclose(SECURE.chance_per_trigger(scheme), 0.1)
