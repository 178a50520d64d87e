"""Threat-model attacks on CS_lite, kept in the package so tests and benchmarks share them.

docs/design.md §7 promises that the ``paper`` profile resists neither key forgery nor fake
detection, and that the ``secure`` profile resists both. These modules implement
the attacks generically over the ``Group`` interface, so the *same* code is run
against both profiles: it breaks ``paper`` and finds nothing on ``secure``.

Nothing here is used by the serving path.
"""

from __future__ import annotations

from encryip_runtime.attacks.forge import (
    bounded_dlog,
    brute_force_key,
    forge_key_from_public_key,
)
from encryip_runtime.attacks.legendre import (
    FakeDetector,
    distinguishing_advantage,
    quadratic_character,
)

__all__ = [
    "FakeDetector",
    "bounded_dlog",
    "brute_force_key",
    "distinguishing_advantage",
    "forge_key_from_public_key",
    "quadratic_character",
]
