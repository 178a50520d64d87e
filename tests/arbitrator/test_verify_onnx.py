"""verify-onnx on trained releases: every variant named, the base owned, independent
models not claimed, a consistent re-permutation still owned (both profiles)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import LICENSEES, Trained

from encryip_runtime.arbitrator import verify_onnx
from encryip_runtime.arbitrator.cli import main

ALPHA = 1e-6


def test_every_licensee_variant_is_named(trained: Trained) -> None:
    for who in LICENSEES:
        v = verify_onnx(trained.model(who), trained.vault)
        assert v.owned and v.attribution == "licensee" and v.licensee == who, v.summary
        assert v.p_value < ALPHA
        by_name = {c.name: c for c in v.candidates}
        assert by_name[who].trigger_hits >= v.min_trigger_hits
        assert by_name[who].probe_accuracy is not None and by_name[who].probe_accuracy > 0.9
        others = [c for c in v.candidates if c.name != who]
        # under a wrong order the triggers hit about chance, and the probes read noise
        assert all(c.trigger_hits < v.min_trigger_hits for c in others)
        assert all((c.probe_accuracy or 0) < 0.6 for c in others)


def test_base_model_owned_without_licensee(trained: Trained) -> None:
    v = verify_onnx(trained.model(), trained.vault)
    assert v.owned and v.licensee is None and v.attribution == "base", v.summary
    assert v.exit_code == 0


@pytest.mark.parametrize("which", ["independent_plain", "independent_protected"])
def test_independent_model_not_claimed(trained: Trained, which: str) -> None:
    v = verify_onnx(getattr(trained, which), trained.vault)
    assert not v.owned, (v.summary, [(c.name, c.trigger_hits) for c in v.candidates])
    assert v.licensee is None and v.attribution == "none"
    assert v.p_value >= ALPHA and v.exit_code == 1
    # it is a good classifier of the same task: the slot recovery sees its classes
    assert v.slot_recovery.probe_accuracy is not None


def test_consistent_repermutation_still_owned(trained: Trained) -> None:
    v = verify_onnx(trained.repermuted / "model.onnx", trained.vault)
    assert v.owned, (v.summary, v.slot_recovery)
    assert v.slot_recovery.usable and v.slot_recovery.p_value < ALPHA
    # the slot fingerprint is erased: no issued order explains the triggers ...
    assert all(c.trigger_hits < v.min_trigger_hits for c in v.candidates)
    # ... but the weight fingerprint still names the leaker
    assert v.licensee == trained.repermuted_from and v.attribution == "licensee", v.summary
    assert v.weights is not None and "weight fingerprint" in v.summary
    best = v.weights.best()
    assert best is not None and best.name == trained.repermuted_from and best.z > 20


def test_repermuted_with_its_manifest_is_exact(trained: Trained) -> None:
    v = verify_onnx(
        trained.repermuted / "model.onnx",
        trained.vault,
        manifest_path=trained.repermuted / "manifest.json",
    )
    assert v.owned and v.attribution == "licensee" and v.licensee == trained.repermuted_from
    manifest = next(c for c in v.candidates if c.kind == "manifest")
    # undoing the manifest's order gives back exactly the leaking licensee's evidence
    src = verify_onnx(trained.model(trained.repermuted_from), trained.vault)
    own = next(c for c in src.candidates if c.name == trained.repermuted_from)
    assert (manifest.trigger_hits, manifest.probe_accuracy) == (
        own.trigger_hits,
        own.probe_accuracy,
    )
    assert manifest.log10_p_value < math.log10(ALPHA)


def test_variant_with_its_own_manifest_names_licensee(trained: Trained) -> None:
    d = trained.paths.licensee_dir("initech")
    v = verify_onnx(d / "model.onnx", trained.vault, manifest_path=d / "manifest.json")
    assert v.licensee == "initech"
    assert next(c for c in v.candidates if c.name == "initech").manifest_agrees


def test_cli_text_and_json(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify-onnx", str(trained.model("acme")), "--vault", str(trained.vault)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "OWNED" in out and "'acme'" in out and "threshold: p < 1e-06" in out
    rc = main(["verify-onnx", str(trained.independent_plain), "--vault", str(trained.root),
               "--json", "--alpha", "1e-9"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert doc["owned"] is False and doc["alpha"] == 1e-9 and doc["licensee"] is None
    assert {c["name"] for c in doc["candidates"]} == {"base", *LICENSEES}
    assert doc["min_trigger_hits"] >= 1


def test_stricter_alpha_needs_more_hits(trained: Trained) -> None:
    loose = verify_onnx(trained.model("acme"), trained.vault, alpha=1e-3)
    strict = verify_onnx(trained.model("acme"), trained.vault, alpha=1e-12)
    assert strict.min_trigger_hits > loose.min_trigger_hits
    assert strict.licensee == loose.licensee == "acme"
