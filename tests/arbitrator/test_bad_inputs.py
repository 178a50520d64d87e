"""Corrupt, truncated or mismatched inputs: a clear error on stderr, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Trained
from tiny_release import make_tiny_release, tiny_mlp_onnx

from encryip_runtime.arbitrator.cli import main
from encryip_runtime.formats.vault_crypt import VAULT_ROLE, read_vault_bytes


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.err


def test_onnx_with_another_output_size(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "other.onnx"
    bad.write_bytes(tiny_mlp_onnx(trained.plan.output_size + 1, shape=trained.data.input_shape))
    rc, err = _run(["verify-onnx", str(bad), "--vault", str(trained.vault)], capsys)
    assert rc == 2 and f"{trained.plan.output_size + 1} outputs" in err


def test_onnx_of_another_input_shape(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "other.onnx"
    bad.write_bytes(tiny_mlp_onnx(trained.plan.output_size, shape=(1, 8, 8)))
    rc, err = _run(["verify-onnx", str(bad), "--vault", str(trained.vault)], capsys)
    assert rc == 2 and "input" in err


@pytest.mark.parametrize("damage", ["truncate", "text", "empty", "missing"])
def test_corrupt_onnx(
    trained: Trained, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.onnx"
    data = trained.model("acme").read_bytes()
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "text":
        bad.write_text("hello")
    elif damage == "empty":
        bad.write_bytes(b"")
    rc, err = _run(["verify-onnx", str(bad), "--vault", str(trained.vault)], capsys)
    assert rc == 2 and str(bad) in err


@pytest.mark.parametrize("damage", ["truncate-json", "npz-garbage", "npz-missing", "json-bad"])
def test_corrupt_vault(
    trained: Trained, release_copy: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vault = release_copy / "vault.json"
    npz = release_copy / "vault.npz"
    if damage == "truncate-json":
        vault.write_bytes(vault.read_bytes()[:500])
    elif damage == "npz-garbage":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "npz-missing":
        npz.unlink()
    else:
        plain = read_vault_bytes(vault, VAULT_ROLE).decode()
        vault.write_text(plain.replace('"t":', '"t_":'))  # a plaintext vault still reads
    for cmd in (
        ["verify-onnx", str(trained.model("acme"))],
        ["export-triggers", "--out", str(release_copy / "x")],
    ):
        rc, err = _run([*cmd, "--vault", str(vault)], capsys)
        assert rc == 2 and "vault" in err, err


def test_manifest_of_another_release(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_tiny_release(tmp_path / "other", trained.profile)
    rc, err = _run(["verify-onnx", str(trained.model("acme")), "--vault", str(trained.vault),
                    "--manifest", str(other.root / "manifest.json")], capsys)  # fmt: skip
    assert rc == 2 and "another release" in err


def test_labels_for_another_release_vault(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_tiny_release(tmp_path / "other", trained.profile)  # 8 triggers, not 24
    obs = tmp_path / "obs.json"
    obs.write_text("[" + ",".join(["0"] * trained.plan.num_triggers) + "]")
    rc, err = _run(["verify-labels", str(obs), "--vault", str(other.paths.vault)], capsys)
    assert rc == 2 and "triggers" in err


def test_alpha_out_of_reach_is_no_decision(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _run(["verify-onnx", str(trained.model("acme")), "--vault", str(trained.vault),
                    "--alpha", "1e-200"], capsys)  # fmt: skip
    assert rc == 2 and "triggers" in err and "alpha" in err


@pytest.mark.parametrize("alpha", ["0", "1", "abc", "-1e-3", "nan"])
def test_bad_alpha_is_usage_error(
    trained: Trained, alpha: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["verify-onnx", str(trained.model("acme")), "--vault", str(trained.vault),
              "--alpha", alpha])  # fmt: skip
    assert exc.value.code == 2
    assert "alpha" in capsys.readouterr().err
