"""Trigger-query detectors of a single party (issue "attribution a leaker cannot dodge").

A licensee who leaks on purpose wants to answer the arbitrator's trigger queries with
anything but the label its key gives them. Each detector here is what one party can
build alone, from what it legitimately holds, and flags the queries it believes are
triggers. They share one interface (``fit`` on ordinary traffic, ``flags`` on new
queries) so the filtering proxy (``attacks.proxy``) can chain them.

* ``InputStatsDetector`` — anyone who sees the queries: per-image pixel mean and
  standard deviation against those of ordinary inputs (noise triggers have mean ~126,
  std ~73-118; MNIST digits ~33 / ~79).
* ``ClassMessageDetector`` — the key holder (format v1, hash codec): a prediction
  decrypts to one of the K class messages, and these K elements are learned from a few
  hundred ordinary predictions; a Fake decrypts to a fresh element outside the set.
  (Format v2 is built so this fails; its own detectors live in ``attacks.keyholder``.)
* ``SlotDetector`` — the holder of the model file: the argmax output slot of a
  trigger is a Fake slot, which never wins on ordinary inputs.

Nothing here is used by the serving path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.scheme import Ciphertexts
from encryip_runtime.formats.keyfile import LicenseeKey

__all__ = [
    "ClassMessageDetector",
    "Detector",
    "DetectorScore",
    "InputStatsDetector",
    "KeyHolderDetector",
    "Query",
    "SlotDetector",
    "auroc",
    "score_detector",
]


@dataclass(frozen=True)
class Query:
    """What a detector may look at: the inputs and, behind a proxy, the ciphertexts
    the owner's server returned for them (``None`` for a detector run on inputs alone)."""

    x: npt.NDArray[np.uint8]
    ciphertexts: Ciphertexts | None = None
    wire: list[bytes] | None = None  # the same answers as they came over the wire


class Detector(Protocol):
    name: str

    def fit(self, q: Query) -> None: ...

    def flags(self, q: Query) -> npt.NDArray[np.bool_]: ...


def _image_features(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1)


@dataclass
class InputStatsDetector:
    """Flags images whose (pixel mean, pixel std) lie far from ordinary inputs'.

    The score is the larger |z| of the two features; the threshold is the
    ``1 - target_fpr`` quantile of the fit set's scores (so ~target_fpr false alarms).
    """

    target_fpr: float = 0.01
    name: str = "input-stats"
    center: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))
    scale: npt.NDArray[np.float64] = field(default_factory=lambda: np.ones(2))
    threshold: float = np.inf

    def fit(self, q: Query) -> None:
        f = _image_features(q.x)
        self.center = f.mean(axis=0)
        self.scale = np.maximum(f.std(axis=0), 1e-9)
        self.threshold = float(np.quantile(self.scores(q), 1.0 - self.target_fpr))

    def scores(self, q: Query) -> npt.NDArray[np.float64]:
        z = np.abs(_image_features(q.x) - self.center) / self.scale
        return np.asarray(z.max(axis=1))

    def flags(self, q: Query) -> npt.NDArray[np.bool_]:
        return np.asarray(self.scores(q) > self.threshold)


@dataclass
class ClassMessageDetector:
    """Key holder, format v1: flags a decryption that is none of the learned class messages.

    ``fit`` needs the server's answers to ordinary queries (``q.ciphertexts``); every
    distinct decrypted element seen there is taken as a class message (K of them).
    """

    key: LicenseeKey
    name: str = "key-holder"
    known: set[bytes] = field(default_factory=set)

    def _elements(self, q: Query) -> list[bytes]:
        if q.ciphertexts is None:
            raise ValueError(f"{self.name}: needs the server's ciphertexts for the queries")
        g = self.key.scheme.group
        rows = g.to_bytes(self.key.scheme.dec(self.key.sk, q.ciphertexts))
        return [bytes(r) for r in rows]

    def fit(self, q: Query) -> None:
        self.known = set(self._elements(q))

    def flags(self, q: Query) -> npt.NDArray[np.bool_]:
        return np.array([e not in self.known for e in self._elements(q)], dtype=bool)


class KeyHolderDetector:
    """The best key-holder detector for the key's format.

    ``encryip_runtime.attacks.keyholder.MembershipDetector`` where that module exists
    (with format v2's exact class windows for a v2 key), else ``ClassMessageDetector``.
    """

    name = "key-holder"

    def __init__(self, key: LicenseeKey) -> None:
        import importlib

        try:
            mod: Any = importlib.import_module("encryip_runtime.attacks.keyholder")
        except ImportError:
            mod = None
        self.inner: Any = ClassMessageDetector(key)
        if mod is not None:
            try:  # format v2: the exact class windows (their range R is public)
                self.inner = mod.MembershipDetector(key, known_windows=True)
            except ValueError:  # format v1: learned from ordinary outputs
                self.inner = mod.MembershipDetector(key)
        self.uses = type(self.inner).__name__

    def _wire(self, q: Query) -> list[bytes]:
        if q.wire is None:
            raise ValueError(f"{self.name}: needs the server's answers to the queries")
        return q.wire

    def fit(self, q: Query) -> None:
        if isinstance(self.inner, ClassMessageDetector):
            self.inner.fit(q)
        else:
            self.inner.fit(self._wire(q))

    def flags(self, q: Query) -> npt.NDArray[np.bool_]:
        if isinstance(self.inner, ClassMessageDetector):
            return self.inner.flags(q)
        return np.asarray(self.inner.flags(self._wire(q)), dtype=bool)


class SlotDetector:
    """File holder: flags inputs whose winning output slot never wins on ordinary data."""

    name = "file-holder"

    def __init__(self, model_path: Path | str) -> None:
        from encryip_runtime.arbitrator.inputs import SuspectModel

        self.model = SuspectModel(Path(model_path))
        self.winning: set[int] = set()
        self.num_outputs = 0

    def slots(self, x: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        lg = self.model.logits(np.ascontiguousarray(x, dtype=np.uint8))
        self.num_outputs = int(lg.shape[1])
        return np.asarray(np.argmax(lg, axis=1), dtype=np.int64)

    def fit(self, q: Query) -> None:
        self.winning = {int(s) for s in self.slots(q.x)}

    def flags(self, q: Query) -> npt.NDArray[np.bool_]:
        return np.array([int(s) not in self.winning for s in self.slots(q.x)], dtype=bool)


def auroc(neg: npt.ArrayLike, pos: npt.ArrayLike) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    n = np.asarray(neg, dtype=np.float64)
    p = np.asarray(pos, dtype=np.float64)
    if not len(n) or not len(p):
        raise ValueError("auroc needs at least one negative and one positive score")
    allv = np.concatenate([n, p])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[len(n) :].sum()
    return float((r_pos - len(p) * (len(p) + 1) / 2) / (len(p) * len(n)))


@dataclass(frozen=True)
class DetectorScore:
    name: str
    triggers_flagged: int
    num_triggers: int
    natural_flagged: int
    num_natural: int

    @property
    def true_positive_rate(self) -> float:
        return self.triggers_flagged / max(self.num_triggers, 1)

    @property
    def false_positive_rate(self) -> float:
        return self.natural_flagged / max(self.num_natural, 1)

    @property
    def advantage(self) -> float:
        """Pr[flag | trigger] - Pr[flag | natural] (1: perfect, 0: useless)."""
        return self.true_positive_rate - self.false_positive_rate

    def to_json(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "triggers_flagged": self.triggers_flagged,
            "num_triggers": self.num_triggers,
            "natural_flagged": self.natural_flagged,
            "num_natural": self.num_natural,
            "advantage": self.advantage,
            "false_positive_rate": self.false_positive_rate,
        }


def score_detector(det: Detector, triggers: Query, natural: Query) -> DetectorScore:
    """Flag counts on trigger queries and on held-out ordinary queries (not the fit set)."""
    t = det.flags(triggers)
    n = det.flags(natural)
    return DetectorScore(det.name, int(t.sum()), len(t), int(n.sum()), len(n))
