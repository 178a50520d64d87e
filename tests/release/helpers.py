"""Shared helpers for release tests: run a release's models and decrypt with its keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.formats import LicenseeKey, Vault
from encryip_runtime.pipeline import ProtectedModel


def inputs(pm: ProtectedModel, count: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *pm.manifest.input.shape), dtype=np.uint8)


def decrypt(pm: ProtectedModel, key_path: Path, x: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    key = LicenseeKey.load(key_path)
    return key.scheme.decrypt_labels(key.sk, pm.scheme.from_wire(pm.predict(x)))


def base_slots(pm_base: ProtectedModel, x: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    return np.argmax(pm_base.logits(x), axis=1)


def class_of_slot(vault: Vault) -> dict[int, int]:
    """secure: base slot -> class index, for the class slots only."""
    assert vault.class_slots is not None
    return {int(s): y for y, s in enumerate(vault.class_slots)}


def plain_labels(vault: Vault, pm_base: ProtectedModel, x: Any) -> npt.NDArray[np.int64]:
    """The true label of each input (-1 where the base slot is a trigger slot)."""
    cls = class_of_slot(vault)
    return np.array([cls.get(int(s), -1) for s in base_slots(pm_base, x)], dtype=np.int64)


def class_and_trigger_inputs(
    vault: Vault, count: int, seed: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """secure selector releases: ``count`` images over all slots, with the class of each
    (-1 on trigger slots) and the trigger index of each (-1 on class slots)."""
    from .conftest import images_for_slots

    assert vault.class_slots is not None and vault.trigger_slots is not None
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, vault.output_size, count)
    cls = class_of_slot(vault)
    trig = {int(s): i for i, s in enumerate(vault.trigger_slots)}
    truth = np.array([cls.get(int(s), -1) for s in slots], dtype=np.int64)
    trigger = np.array([trig.get(int(s), -1) for s in slots], dtype=np.int64)
    return images_for_slots(slots, seed), truth, trigger
