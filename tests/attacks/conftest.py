"""A tiny real secure release whose triggers reach their Fake slots, served on loopback.

The base model is the *selector* of tests/release (output slot s = pixel s), so the
test controls every slot: ordinary inputs are dim images with one bright pixel on a
class slot (mean ~50, std ~30, like a digit's low-key statistics), and the triggers are
the noise images the exporter makes by default (uniform pixels, mean ~126) whose
brightest pixel is their Fake slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tiny_release import TinyRelease

from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.formats.vault import Vault
from encryip_runtime.release import plan_protection, write_release

SHAPE = (1, 8, 8)
LICENSEES = ("acme", "globex", "initech")
NUM_TRIGGERS = 24


def selector_onnx(num_outputs: int) -> bytes:
    from release.conftest import selector_onnx as make

    return make(num_outputs)


def _images(slots: npt.ArrayLike, seed: int, high: int) -> npt.NDArray[np.uint8]:
    """Pixels uniform in [0, high), and 255 at each image's selector slot."""
    s = np.asarray(slots, dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, high, (len(s), int(np.prod(SHAPE))), dtype=np.uint8)
    x[np.arange(len(s)), s] = 255
    return x.reshape(len(s), *SHAPE)


def natural_images(slots: npt.ArrayLike, seed: int) -> npt.NDArray[np.uint8]:
    return _images(slots, seed, 100)


def noise_triggers(slots: npt.ArrayLike, seed: int) -> npt.NDArray[np.uint8]:
    return _images(slots, seed, 251)


@dataclass(frozen=True)
class AttackRelease:
    release: TinyRelease
    vault: Vault

    def natural(self, n: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """n ordinary inputs and their classes."""
        assert self.vault.class_slots is not None
        y = np.random.default_rng(seed).integers(0, self.vault.num_classes, n)
        return natural_images(np.asarray(self.vault.class_slots)[y], seed), y.astype(np.int64)


def has_secure_format_2() -> bool:
    import inspect

    return "secure_format" in inspect.signature(plan_protection).parameters


def build_attack_release(root: Path, secure_format: int = 1, noise: bool = True) -> AttackRelease:
    """``noise``: the triggers are noise images; else data-like (natural-looking)."""
    extra = {"secure_format": secure_format} if has_secure_format_2() else {}
    assert secure_format == 1 or extra, "this build has no secure format 2"
    plan = plan_protection(
        "secure", [f"class{i}" for i in range(10)], list(LICENSEES), num_triggers=NUM_TRIGGERS,
        **extra,
    )  # fmt: skip
    assert plan.class_slots is not None and plan.trigger_slots is not None
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 50)
    make = noise_triggers if noise else natural_images
    write_release(
        root,
        plan,
        selector_onnx(plan.output_size),
        input_spec=InputSpec("pixels", "uint8", SHAPE),
        trigger_inputs=make(plan.trigger_slots, seed=4),
        probe_inputs=natural_images(plan.class_slots[y], seed=5),
        probe_labels=y.astype(np.int64),
    )
    rel = TinyRelease(root, "secure", LICENSEES, 10)
    return AttackRelease(rel, Vault.load(rel.paths.vault))


@pytest.fixture(scope="session")
def attack_release(tmp_path_factory: pytest.TempPathFactory) -> AttackRelease:
    """Format v1 (the format the single-party detectors break), noise triggers."""
    return build_attack_release(tmp_path_factory.mktemp("attack-release"))


@pytest.fixture(scope="module")
def owner_server(
    attack_release: AttackRelease, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The owner's EncryIP server on 127.0.0.1 serving the base model (owner-hosted)."""
    from server.conftest import running_server

    public = attack_release.release.public_dir(tmp_path_factory.mktemp("public"))
    with running_server(public) as srv:
        yield f"127.0.0.1:{srv.port}"
