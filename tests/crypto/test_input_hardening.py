"""Public inputs that must be refused: identity public-key parts, non-canonical hex."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime.crypto.profiles import make_scheme
from encryip_runtime.exceptions import EncodingError, FormatError
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.manifest import Manifest


@pytest.mark.parametrize("part", ["g2", "h"])
def test_identity_in_the_public_key_is_refused(
    tiny_release: Any, tmp_path: Path, part: str
) -> None:
    """With h = 1, SampDist leaves u3 unchanged and outputs become linkable."""
    identity = "00" * 32 if tiny_release.profile == "secure" else 1
    for src, load in (
        (tiny_release.root / "manifest.json", Manifest.load),
        (tiny_release.key("acme"), LicenseeKey.load),
    ):
        doc = json.loads(src.read_text())
        doc["pk"][part] = identity
        dst = tmp_path / src.name
        dst.write_text(json.dumps(doc))
        with pytest.raises(FormatError, match=f"pk.{part}.*must not be the identity"):
            load(dst)


GOOD = "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"


@pytest.mark.parametrize(
    "bad",
    [
        GOOD.upper(),
        GOOD[:10].upper() + GOOD[10:],
        " " + GOOD[:-2] + " ",
        GOOD[:32] + " " + GOOD[32:],
    ],
)
def test_only_lowercase_canonical_hex(bad: str) -> None:
    g = make_scheme("secure", 10).group
    g.from_json([GOOD])
    with pytest.raises(EncodingError, match="element 0"):
        g.from_json([bad])
    scalar = "05" + "00" * 31
    assert g.scalar_from_json(scalar) == 5
    with pytest.raises(EncodingError, match="scalar"):
        g.scalar_from_json(scalar.upper().replace("05", "0A"))
    with pytest.raises(EncodingError, match="scalar"):
        g.scalar_from_json(" " + scalar[2:] + "0 ")
