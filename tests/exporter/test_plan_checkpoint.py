"""A training run's protection plan is checkpointed in the vault's validated format
(sealed at rest), not pickled, and resume reads back the same plan and triggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats.vault_crypt import is_sealed
from exporter.job import JobConfig, _plan_for
from exporter.train import DataArrays, TrainConfig, as_splits


@pytest.mark.parametrize("profile", ["secure", "paper"])
def test_plan_checkpoint_is_a_sealed_vault_and_resumes(tmp_path: Path, profile: str) -> None:
    ck = str(tmp_path / "ck")
    cfg = TrainConfig(profile=profile, num_triggers=6, licensees=("acme", "globex"), checkpoint=ck)
    job = JobConfig(train=cfg)
    names = tuple(f"c{i}" for i in range(10))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (100, 1, 8, 8), dtype=np.uint8), np.arange(100) % 10
    splits = as_splits(DataArrays(x, y, x[:20], y[:20], names))
    plan, trig = _plan_for(job, splits)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ck.plan.json", "ck.plan.npz"]
    for name in files:
        raw = (tmp_path / name).read_bytes()
        assert is_sealed(raw) and b"pickle" not in raw
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    again, trig2 = _plan_for(job, splits)  # resume
    np.testing.assert_array_equal(trig, trig2)
    assert again.family.pk == plan.family.pk and again.family.t == plan.family.t
    assert again.family.keys == plan.family.keys and again.licensees == plan.licensees
    np.testing.assert_array_equal(again.codewords(), plan.codewords())
    assert again.decoder == plan.decoder and again.output_size == plan.output_size
    (tmp_path / "ck.plan.json").write_bytes(b"{}")  # damaged: a clear error, not unpickling
    with pytest.raises(FormatError):
        _plan_for(job, splits)


def test_no_pickle_in_the_exporter() -> None:
    src = Path(__file__).resolve().parents[2] / "exporter"
    assert not [p.name for p in src.glob("*.py") if "import pickle" in p.read_text()]
