"""Shared fixtures. ``tiny_release`` builds a real release (ONNX + manifest + keys + vault)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The vault is encrypted at rest; the suite (and the commands it runs as subprocesses,
# which inherit this) unlock it with this test passphrase. Tests of the missing or wrong
# passphrase remove or change it themselves.
os.environ.setdefault("ENCRYIP_VAULT_PASSPHRASE", "encryip-test-suite-passphrase")

# `encryip serve` opens the REST port 8000 by default; servers that tests start (in this
# process or as subprocesses, which inherit this) leave it off unless a test asks for it,
# so that concurrent test runs on one machine do not collide on port 8000.
os.environ.setdefault("ENCRYIP_HTTP_PORT", "0")

from tiny_release import TinyRelease, make_tiny_release


@pytest.fixture(scope="session", params=["paper", "secure"])
def tiny_release(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> TinyRelease:
    """One small release per profile (session-scoped: treat as read-only)."""
    return make_tiny_release(tmp_path_factory.mktemp(f"release-{request.param}"), request.param)


@pytest.fixture(scope="session")
def secure_release(tmp_path_factory: pytest.TempPathFactory) -> TinyRelease:
    return make_tiny_release(tmp_path_factory.mktemp("release-secure"), "secure")


@pytest.fixture(scope="session")
def paper_release(tmp_path_factory: pytest.TempPathFactory) -> TinyRelease:
    return make_tiny_release(tmp_path_factory.mktemp("release-paper"), "paper")


@pytest.fixture()
def fresh_release(tmp_path: Path) -> TinyRelease:
    """A writable secure release for tests that modify it (keys add / rotate)."""
    return make_tiny_release(tmp_path / "release", "secure")


@pytest.fixture(autouse=True)
def _no_flush_to_zero_after_the_test() -> Iterator[None]:
    """``encryip-export``'s main() flushes subnormal floats to zero for the rest of its
    process (exporter.train.enable_flush_denormal). Tests call it in-process: turn it off
    again after each test, or later tests (hypothesis draws subnormal floats) see zeros."""
    yield
    train = sys.modules.get("exporter.train")
    if train is not None and getattr(train, "_flush_process_wide", False):
        import torch

        torch.set_flush_denormal(False)
        train._flush_process_wide = False
