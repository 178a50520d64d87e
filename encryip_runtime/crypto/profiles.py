"""The two crypto profiles, constructed in one place."""

from __future__ import annotations

from typing import Literal

from encryip_runtime.crypto.labels import HashLabelCodec, OffsetLabelCodec
from encryip_runtime.crypto.scheme import CSLite
from encryip_runtime.crypto.zp import ZpGroup, paper_prime

__all__ = ["PROFILES", "Profile", "make_scheme"]

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
