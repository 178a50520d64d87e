"""``encryip-export``: help, argument checks (all problems at once, exit 2), train, protect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from exporter.cli import main
from exporter.data import make_synthetic
from exporter.job import arrays_from_splits
from exporter.models import build_model
from exporter.train import TrainConfig, plain_targets, train_model

SMALL = ["--dataset", "synthetic", "--train-subset", "1000", "--test-subset", "200",
         "--batch-size", "32", "--lr", "3e-3", "--triggers", "8", "--probe-size", "50",
         "--threads", "1", "--no-progress", "--trigger-source", "noise"]  # fmt: skip


def _plain_cnn(epochs: int) -> torch.nn.Module:
    """A plain (unprotected) CNN trained on the synthetic set: what `protect` starts from."""
    data = arrays_from_splits(make_synthetic(1000, 200, seed=0))
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, num_threads=1)
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 16)
    return train_model(model, data, plain_targets(10), cfg, progress=False).model


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "protect" in out and "torchrun" in out
    # every multi-line example keeps its shell continuations (copy-pasteable)
    assert re.search(r"torchvision:resnet18 \\\n", out), out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--dataset", "--arch", "--profile", "--licensees", "--baseline", "--checkpoint"):
        assert flag in out


def test_all_problems_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    rc = main(["train", "--out", str(tmp_path / "full"), "--epochs", "0", "--lr", "-1",
               "--licensees", " , "])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    for needle in ("--epochs", "--lr", "--licensees", "not empty"):
        assert needle in err, needle
    assert not (tmp_path / "full" / "model.onnx").exists()


def test_bad_dataset_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--dataset", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "r")])
    assert rc == 1
    assert "nope.npz" in capsys.readouterr().err


def test_train_paper_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rel"
    rc = main(["train", *SMALL, "--epochs", "3", "--profile", "paper", "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "| EncryIP (licensee key) |" in stdout
    m = json.loads((out / "report" / "metrics.json").read_text())
    assert m["config"]["profile"] == "paper"
    assert m["accuracy"]["encryip"] >= 0.95
    assert m["verification"]["trigger_accuracy"] == 1.0


def test_protect_existing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = _plain_cnn(epochs=2)
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "rel"
    rc = main(["protect", *SMALL, "--epochs", "2", "--model", str(tmp_path / "plain.pt"),
               "--arch", "cnn", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "report" / "metrics.json").read_text())
    assert m["accuracy"]["before_protection"] >= 0.95
    assert m["accuracy"]["encryip"] >= m["accuracy"]["before_protection"] - 0.02
    assert m["verification"]["trigger_accuracy"] == 1.0
    assert (out / "licensees" / "acme" / "model.onnx").is_file()
    sc = m["self_check"]
    assert sc["passed"] is True and sc["alpha"] == 1e-6
    assert [v["licensee"] for v in sc["variants"]] == ["acme", "globex", "initech"]
    for v in sc["variants"]:
        assert v["passed"] and v["named"] == v["licensee"] and v["log10_p_value"] < -6
        assert v["trigger_hits"] == v["num_triggers"] == 8


def test_protect_that_cannot_teach_the_triggers_fails_and_leaves_no_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fine-tune far too weak to learn the triggers (issue: `protect --epochs 1` from a
    barely trained model wrote a release verify-onnx could not prove): exit 1, a message
    that says what to change, and nothing left that looks like a release."""
    plain = _plain_cnn(epochs=1)
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "rel"
    out.mkdir()  # an empty --out is allowed, and must stay empty
    args = [a if a != "3e-3" else "1e-7" for a in SMALL]
    # --tune all: the whole network at a learning rate far too small (--tune head would fit
    # the trigger rows in closed form on the frozen features and succeed).
    rc = main(["protect", *args, "--epochs", "1", "--max-trigger-epochs", "1", "--tune",
               "all", "--model", str(tmp_path / "plain.pt"), "--arch", "cnn", "--out",
               str(out)])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "self-check failed" in err and "after 1 trigger-consolidation epoch" in err
    assert "No release was written" in err and "--max-trigger-epochs" in err
    assert "triggers recovered" in err
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.pt", "rel"]  # no staging dir


def test_protect_wrong_head_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(build_model("cnn", 1, 7, 16).state_dict(), tmp_path / "seven.pt")
    rc = main(["protect", *SMALL, "--model", str(tmp_path / "seven.pt"), "--out",
               str(tmp_path / "rel")])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "seven.pt" in err and "unexpected" not in err


def test_protect_argument_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["protect", *SMALL, "--model", str(tmp_path / "absent.pt"), "--profile", "paper",
               "--out", str(tmp_path / "rel2")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "absent.pt" in err and "secure profile" in err


def test_protect_plain_state_dict_of_builtin_arch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13.9: the bare network's state_dict (no scale/shift), as users save it, and
    DDP's ``module.`` prefix inside a ``{"model": ...}`` checkpoint."""
    plain = _plain_cnn(epochs=2)
    bare = plain.net.state_dict()  # type: ignore[union-attr]
    torch.save(bare, tmp_path / "bare.pt")
    torch.save({"model": {f"module.{k}": v for k, v in bare.items()}}, tmp_path / "ddp.pt")
    for name, tune in (("bare.pt", "head"), ("ddp.pt", "all")):
        out = tmp_path / f"rel-{name}"
        rc = main(["protect", *SMALL, "--epochs", "2", "--model", str(tmp_path / name),
                   "--arch", "cnn", "--tune", tune, "--out", str(out)])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        m = json.loads((out / "report" / "metrics.json").read_text())
        assert m["protect"]["accuracy_before"] >= 0.95 and m["protect"]["tune"] == tune
        # head: the owner's class rows and backbone untouched; all: a brief fine-tune
        assert m["protect"]["agreement_with_original"] >= (1.0 if tune == "head" else 0.95)
        assert m["verification"]["trigger_accuracy"] == 1.0
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "other.pt")
    rc = main(["protect", *SMALL, "--model", str(tmp_path / "other.pt"), "--arch", "cnn",
               "--out", str(tmp_path / "rel-other")])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "other.pt" in err and "missing" in err and "features.0.weight" in err


def test_model_flag_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--out", str(tmp_path / "r"), "--arch", "torchvision:nosuchnet",
               "--mean", "124,116,104", "--workers", "-1", "--weights",
               str(tmp_path / "absent.pth")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    for needle in ("nosuchnet", "[0, 1] scale", "--mean and --std", "--workers", "absent.pth"):
        assert needle in err, needle


def test_readme_own_model_example_parses() -> None:
    """The README's copy-paste `protect` command is a valid command line."""
    import re
    import shlex

    from exporter.cli import build_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Your own model and data", 1)[1]
    block = re.search(r"```bash\n(encryip-export protect.*?)```", section, re.S)
    assert block is not None
    argv = shlex.split(block.group(1).replace("\\\n", " "))[1:]
    args = build_parser().parse_args(argv)
    assert args.arch == "torchvision:resnet50" and args.image_size == 224
    assert args.mean == "0.485,0.456,0.406" and args.tune == "head"
