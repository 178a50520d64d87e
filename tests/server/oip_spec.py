"""The Open Inference Protocol's REST schema (``rest_predict_v2.yaml``) for tests.

Read from ``../shared/reference/open-inference-protocol/`` next to the repository (CI always
has it; ``ENCRYIP_REFERENCE_DIR`` points elsewhere). Under ``CI=true`` its absence fails the
test; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def reference_dir() -> Path:
    d = Path(os.environ.get("ENCRYIP_REFERENCE_DIR") or REPO.parent / "shared" / "reference")
    if not (d / "open-inference-protocol" / "rest_predict_v2.yaml").is_file():
        reason = f"Open Inference Protocol reference not found under {d}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI must have it)")
        pytest.skip(reason)
    return d


@functools.cache
def _spec() -> dict[str, Any]:
    import yaml

    path = reference_dir() / "open-inference-protocol" / "rest_predict_v2.yaml"
    return dict(yaml.safe_load(path.read_text()))


def validate(instance: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` is a valid ``schema_name``
    (a name under ``components/schemas`` of the spec)."""
    import jsonschema

    spec = _spec()
    assert schema_name in spec["components"]["schemas"], schema_name
    schema = {"components": spec["components"], "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema).validate(instance)
