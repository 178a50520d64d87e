"""verify-labels (Eqn. 5) and export-triggers: a service's labels on the triggers name
the key behind it, also after a consistent re-permutation; random labels do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LICENSEES, Trained

from encryip_runtime.arbitrator import export_triggers, verify_labels
from encryip_runtime.arbitrator.cli import main
from encryip_runtime.client import decrypt_batch
from encryip_runtime.formats import LicenseeKey
from encryip_runtime.formats.vault import Vault
from encryip_runtime.pipeline import ProtectedModel


def _service_labels(model_dir: Path, key_path: Path, x: np.ndarray) -> list[int]:
    """What a black-box service built from ``model_dir`` and ``key_path`` answers."""
    pm = ProtectedModel.load(model_dir)
    wire = pm.predict(x)
    labels = decrypt_batch([bytes(r) for r in wire], LicenseeKey.load(key_path))
    return [int(v) for v in labels]


def _triggers(trained: Trained) -> np.ndarray:
    vault = Vault.load(trained.vault)
    return vault.load_arrays(trained.vault).trigger_inputs


def test_service_labels_name_their_licensee(trained: Trained, tmp_path: Path) -> None:
    x = _triggers(trained)
    for who in LICENSEES:
        labels = _service_labels(trained.paths.licensee_dir(who), trained.paths.key(who), x)
        obs = tmp_path / f"{who}.json"
        obs.write_text(json.dumps({"labels": labels}))
        v = verify_labels(obs, trained.vault)
        assert v.proven and v.licensee == who, v.summary
        assert v.p_value < 1e-6 and v.exit_code == 0
        best = {m.name: m.matches for m in v.licensees}
        assert best[who] >= v.min_matches
        assert all(best[o] < v.min_matches for o in LICENSEES if o != who)


def test_repermuted_service_still_named(trained: Trained, tmp_path: Path) -> None:
    """docs/design.md §7: re-permuting erases the file fingerprint, not the key behind a service."""
    who = trained.repermuted_from
    labels = _service_labels(trained.repermuted, trained.paths.key(who), _triggers(trained))
    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps(labels))
    v = verify_labels(obs, trained.vault)
    assert v.licensee == who


def test_random_labels_not_proven(trained: Trained, tmp_path: Path) -> None:
    k = trained.plan.num_classes
    rng = np.random.default_rng(3)
    for i in range(5):
        obs = tmp_path / f"r{i}.json"
        obs.write_text(json.dumps(rng.integers(0, k, trained.plan.num_triggers).tolist()))
        v = verify_labels(obs, trained.vault)
        assert not v.proven and v.licensee is None and v.exit_code == 1


def test_null_entries_and_class_names(trained: Trained, tmp_path: Path) -> None:
    who = "acme"
    labels: list[object] = list(
        _service_labels(trained.paths.licensee_dir(who), trained.paths.key(who), _triggers(trained))
    )
    names = trained.plan.class_names
    labels = [names[v] if i % 2 else v for i, v in enumerate(labels)]  # type: ignore[index]
    labels[0] = None
    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps(labels))
    v = verify_labels(obs, trained.vault)
    assert v.answered == trained.plan.num_triggers - 1 and v.licensee == who


def test_too_few_answers_is_no_decision(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps([0, 1] + [None] * (trained.plan.num_triggers - 2)))
    rc = main(["verify-labels", str(obs), "--vault", str(trained.vault)])
    err = capsys.readouterr().err
    assert rc == 2 and "alpha" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "doc",
    [[1, 2, 3], {"lables": []}, "abc", None, {"labels": [99] * 24}, {"labels": [True] * 24}],
)
def test_bad_observed_exit_2(
    trained: Trained, tmp_path: Path, doc: object, capsys: pytest.CaptureFixture[str]
) -> None:
    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps(doc))
    rc = main(["verify-labels", str(obs), "--vault", str(trained.vault), "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and "error:" in captured.err


def test_export_triggers(trained: Trained, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "triggers"
    rc = main(["export-triggers", "--vault", str(trained.vault), "--out", str(out)])
    assert rc == 0
    x = _triggers(trained)
    arr = np.load(out / "triggers.npy")
    assert arr.dtype == np.uint8 and np.array_equal(arr, x)
    meta = json.loads((out / "triggers.json").read_text())
    assert meta["count"] == len(x) and len(meta["files"]) == len(x)
    img = np.asarray(Image.open(out / meta["files"][5]))
    assert np.array_equal(img, x[5, 0])
    assert (out / "triggers.npy").stat().st_mode & 0o077 == 0
    assert export_triggers(trained.vault, tmp_path / "again")  # the Python API
