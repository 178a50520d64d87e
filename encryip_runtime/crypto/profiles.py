"""The two crypto profiles, constructed in one place."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Group
from encryip_runtime.crypto.labels import HashLabelCodec, OffsetLabelCodec
from encryip_runtime.crypto.scheme import CSLite
from encryip_runtime.crypto.scheme_v2 import DEFAULT_SHIFT_RANGE, CSLiteV2, choose_width
from encryip_runtime.crypto.zp import ZpGroup, paper_prime

__all__ = [
    "DEFAULT_SECURE_FORMAT",
    "PROFILES",
    "SECURE_FORMATS",
    "AnyScheme",
    "Profile",
    "make_scheme",
    "make_scheme_v2",
]

#: Format versions of the secure profile: 1 (CS_lite as in the paper, still read and
#: served) and 2 (triggers a single key holder cannot tell from classes). New releases: 2.
SECURE_FORMATS: tuple[int, ...] = (1, 2)
DEFAULT_SECURE_FORMAT = 2


class AnyScheme(Protocol):
    """What every scheme (format v1 ``CSLite``, format v2 ``CSLiteV2``) offers; keys and
    public keys are the scheme's own types (narrow with ``isinstance`` where it matters)."""

    profile: str
    format_version: int

    @property
    def num_classes(self) -> int: ...
    @property
    def group(self) -> Group: ...
    @property
    def codec(self) -> Any: ...
    @property
    def ciphertext_size(self) -> int: ...
    @property
    def max_licensees(self) -> int: ...
    def enc(self, pk: Any, messages: Any) -> Any: ...
    def sampdist(self, pk: Any, cts: Any, rerandomizers: Any = None) -> Any: ...
    def prepare_codebook(self, codebook: Any) -> Any: ...
    def sampdist_codebook(self, pk: Any, prepared: Any, slots: Any) -> Any: ...
    def rerandomizers(self, pk: Any, count: int) -> Any: ...
    def dec(self, sk: Any, cts: Any) -> Any: ...
    def decrypt_labels(self, sk: Any, cts: Any) -> npt.NDArray[np.int64]: ...
    def check_key(self, pk: Any, sk: Any) -> None: ...
    def to_wire(self, cts: Any) -> npt.NDArray[np.uint8]: ...
    def from_wire(self, data: Any) -> Any: ...


Profile = Literal["paper", "secure"]
PROFILES: tuple[str, ...] = ("paper", "secure")


def make_scheme(profile: str, num_classes: int) -> CSLite:
    """CS_lite for ``profile`` ("paper": Z_p^*, insecure; "secure": ristretto255).

    The secure profile's backend is chosen here, once: the native C tables when they
    are built, unless ``ENCRYIP_NATIVE=0``; libsodium otherwise (``scheme.group.backend``).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if profile == "paper":
        return CSLite(ZpGroup(paper_prime(num_classes)), OffsetLabelCodec(num_classes), "paper")
    if profile == "secure":
        from encryip_runtime.crypto import r255_native
        from encryip_runtime.crypto.ristretto import Ristretto255

        native = r255_native.available() and not r255_native.disabled_by_env()
        return CSLite(Ristretto255(native=native), HashLabelCodec(num_classes), "secure")
    raise ValueError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")


def make_scheme_v2(
    num_classes: int, num_licensees: int, shift_range: int = DEFAULT_SHIFT_RANGE
) -> CSLiteV2:
    """Secure format v2 for K classes, sized for ``num_licensees`` (width n from K)."""
    return CSLiteV2(num_classes, choose_width(num_classes, num_licensees), shift_range)
