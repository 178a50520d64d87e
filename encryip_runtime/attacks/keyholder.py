"""What a single key holder can learn from its own decryptions: trigger detectors.

A licensee that proxies the owner's API with its key would like to answer trigger
queries with a random label. It sees only what its key decrypts:

* format v1: the decrypted group element. Ordinary outputs decrypt to the K class
  messages, a Fake to an element outside them, so :class:`MembershipDetector`
  flags every trigger (issue 14: 32/32) and no ordinary output.
* format v2: the decrypted message index ``i`` (``M_0 + i h`` in its table): class
  ``y`` gives ``y + K m`` with the runtime's fresh ``m`` uniform in ``[0, R)``, a
  trigger ``e + K m`` with ``e = d - b.k``, a few windows off the class bases. The
  detector flags an index outside the class windows (known exactly: ``R`` is public,
  or learned from ordinary outputs), or not in the table at all.

:class:`RequeryDetector` sees ``k`` decryptions of one query (the proxy asks the
owner ``k`` times) and flags the query if any of them is flagged or the labels
disagree. :func:`requery_advantage_v2` is the exact advantage of the best such
detector on a format v2 release, from the vault (what the benchmark reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.scheme_v2 import CSLiteV2, SecretKeyV2, Trigger
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.vault import Vault

__all__ = [
    "KeyHolderDetector",
    "MembershipDetector",
    "RequeryDetector",
    "advantage",
    "requery_advantage",
    "requery_advantage_v2",
]

Wire = npt.NDArray[np.uint8] | Sequence[bytes]


def _parse(key: LicenseeKey, wire: Wire) -> npt.NDArray[np.uint8]:
    if isinstance(wire, np.ndarray):
        return key.scheme.from_wire(wire)
    return key.scheme.from_wire([bytes(b) for b in wire])


@dataclass
class MembershipDetector:
    """Flags a decryption that ordinary outputs never produce.

    ``fit`` learns from ordinary (class) outputs: the set of decrypted elements
    (v1) or each label's index window (v2). ``known_windows=True`` (v2) instead uses
    the exact class windows ``[y, y + K (R - 1)]``: ``R`` is in the public manifest.
    """

    key: LicenseeKey
    known_windows: bool = False

    def __post_init__(self) -> None:
        self._elements: set[bytes] = set()
        k = self.key.num_classes
        self._lo = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
        self._hi = np.full(k, np.iinfo(np.int64).min, dtype=np.int64)
        scheme = self.key.scheme
        if self.known_windows:
            if not isinstance(scheme, CSLiteV2):
                raise ValueError("known_windows applies to format v2 keys")
            self._lo = np.arange(k, dtype=np.int64)
            self._hi = self._lo + k * (scheme.shift_range - 1)

    @property
    def is_v2(self) -> bool:
        return isinstance(self.key.scheme, CSLiteV2)

    def observe(
        self, wire: Wire
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_], list[bytes]]:
        """(labels, indices, found, element bytes) of each decryption."""
        cts = _parse(self.key, wire)
        scheme, sk = self.key.scheme, self.key.sk
        if isinstance(scheme, CSLiteV2):
            assert isinstance(sk, SecretKeyV2)
            elements = scheme.dec(sk, cts)
            idx, found = scheme.codec.indices_of(elements)
            labels = scheme.codec.labels_of(elements)
            return labels, idx, found, [bytes(r) for r in elements]
        elements = scheme.dec(sk, cts)
        labels = scheme.codec.labels_of(elements)
        zeros = np.zeros(len(cts), dtype=np.int64)
        rows = scheme.group.to_bytes(elements)
        return labels, zeros, np.ones(len(cts), dtype=bool), [bytes(r) for r in rows]

    def fit(self, ordinary: Wire) -> MembershipDetector:
        labels, idx, found, elements = self.observe(ordinary)
        if self.is_v2:
            if not self.known_windows:
                ok = found
                np.minimum.at(self._lo, labels[ok], idx[ok])
                np.maximum.at(self._hi, labels[ok], idx[ok])
        else:
            self._elements.update(elements)
        return self

    def flags(self, wire: Wire) -> npt.NDArray[np.bool_]:
        labels, idx, found, elements = self.observe(wire)
        if self.is_v2:
            inside = (idx >= self._lo[labels]) & (idx <= self._hi[labels])
            return np.asarray(~found | ~inside)
        return np.array([e not in self._elements for e in elements], dtype=bool)


@dataclass
class RequeryDetector:
    """Flags a query whose ``k`` decryptions include a flagged one or disagree."""

    membership: MembershipDetector

    def flags(self, groups: Sequence[Wire]) -> npt.NDArray[np.bool_]:
        out = np.zeros(len(groups), dtype=bool)
        for i, group in enumerate(groups):
            labels = self.membership.observe(group)[0]
            out[i] = bool(self.membership.flags(group).any()) or len(set(labels.tolist())) > 1
        return out


@dataclass
class KeyHolderDetector:
    """:class:`MembershipDetector` behind ``attacks.proxy.FilteringProxy`` (its
    ``Detector`` protocol: ``fit`` / ``flags`` on a ``Query`` with the server's answers)."""

    key: LicenseeKey
    known_windows: bool = False
    name: str = "key-holder-window"

    def __post_init__(self) -> None:
        self._det = MembershipDetector(self.key, self.known_windows)

    def _wire(self, q: Any) -> list[bytes]:
        if q.wire is not None:
            return list(q.wire)
        if q.ciphertexts is None:
            raise ValueError(f"{self.name}: needs the server's ciphertexts for the queries")
        return [bytes(r) for r in self.key.scheme.to_wire(q.ciphertexts)]

    def fit(self, q: Any) -> None:
        self._det.fit(self._wire(q))

    def flags(self, q: Any) -> npt.NDArray[np.bool_]:
        return self._det.flags(self._wire(q))


def advantage(flags_on_triggers: npt.ArrayLike, flags_on_classes: npt.ArrayLike) -> float:
    """Distinguishing advantage: P(flag | trigger) - P(flag | class)."""
    t = np.asarray(flags_on_triggers, dtype=bool)
    c = np.asarray(flags_on_classes, dtype=bool)
    return float(t.mean() - c.mean()) if t.size and c.size else 0.0


def requery_advantage(
    scheme: CSLiteV2, triggers: Sequence[Trigger], bs: Sequence[tuple[int, ...]], k: int
) -> tuple[float, float]:
    """Exact (mean, worst) advantage, over triggers and the key vectors ``bs``, of the
    best detector that knows the class windows and sees ``k`` decryptions of one query.

    A trigger's base index ``e`` lies ``q = floor(e / K)`` windows off its class base;
    each decryption then falls outside the class window with probability ``|q| / R``
    (uniform shift), and nowhere else differs from a class output, so the advantage
    for ``k`` decryptions is ``1 - (1 - |q| / R)^k``. Class queries are never flagged.
    """
    big_k, r = scheme.num_classes, scheme.shift_range
    advs = [
        1.0 - (1.0 - min(abs(tr.base_index(b) // big_k), r) / r) ** k for b in bs for tr in triggers
    ]
    if not advs:
        return 0.0, 0.0
    return float(np.mean(advs)), float(np.max(advs))


def requery_advantage_v2(vault: Vault, k: int) -> tuple[float, float]:
    """:func:`requery_advantage` for a format v2 vault's triggers and licensees."""
    scheme = vault.scheme
    if not isinstance(scheme, CSLiteV2):
        raise ValueError("format v2 vaults only (format v1 Fakes are always detected)")
    bs = [rec.sk.b for rec in vault.licensees if isinstance(rec.sk, SecretKeyV2)]
    return requery_advantage(scheme, vault.triggers, bs, k)
