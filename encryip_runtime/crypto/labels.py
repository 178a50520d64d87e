"""Label codecs: how a class index becomes a group element and back (docs/design.md §3).

Every element decodes to some label, as in the paper's small group, so a wrong
key yields a plausible-looking but wrong label rather than an error.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Elements, Group

__all__ = ["SECURE_LABEL_DOMAIN", "HashLabelCodec", "LabelCodec", "OffsetLabelCodec"]

SECURE_LABEL_DOMAIN = b"encryip/v1/label"


class LabelCodec(ABC):
    num_classes: int

    @abstractmethod
    def labels_of(self, messages: Elements) -> npt.NDArray[np.int64]:
        """The label each element decodes to."""


class OffsetLabelCodec(LabelCodec):
    """Paper profile: label y <-> element y + 1; element e > K decodes to (e - 1) mod K."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def message_of(self, labels: npt.ArrayLike) -> Elements:
        y = np.asarray(labels, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        return y + 1

    def labels_of(self, messages: Elements) -> npt.NDArray[np.int64]:
        return (np.asarray(messages, dtype=np.int64) - 1) % self.num_classes


class HashLabelCodec(LabelCodec):
    """Secure profile: label(M) = SHA-256(domain || M) as a big-endian integer, mod K."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def labels_of(self, messages: Elements) -> npt.NDArray[np.int64]:
        rows = np.ascontiguousarray(messages, dtype=np.uint8).reshape(-1, 32)
        out = np.empty(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            digest = hashlib.sha256(SECURE_LABEL_DOMAIN + row.tobytes()).digest()
            out[i] = int.from_bytes(digest, "big") % self.num_classes
        return out

    def sample_messages(self, group: Group) -> Elements:
        """One random element per class with label(M_y) = y (rejection sampling)."""
        found: dict[int, npt.NDArray[np.uint8]] = {}
        while len(found) < self.num_classes:
            batch = group.random_elements(4 * self.num_classes)
            for label, row in zip(self.labels_of(batch), batch, strict=True):
                found.setdefault(int(label), row)
        return np.stack([found[y] for y in range(self.num_classes)])
