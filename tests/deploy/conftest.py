"""Fixtures for the deployment checks (helpers in ``helpers.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import ALL_TARGETS, kustomize


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomize target, rendered once per session."""
    return {target: kustomize(target) for target in ALL_TARGETS}
