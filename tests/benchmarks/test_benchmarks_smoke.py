"""Smoke test: every benchmark of the paper reproduction runs at a tiny budget, prints
one JSON object as its last stdout line, and run_all renders a page from them.

The numbers at this budget mean nothing; the real runs are ``make bench``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import attacks, paper_fig5_cost, paper_table1, run_all


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines, "no stdout"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-out")


def _save(out: Path, name: str, result: dict[str, Any]) -> None:
    (out / f"{name}.json").write_text(json.dumps(result))


def test_table1_tiny(capsys: pytest.CaptureFixture[str], outputs: Path) -> None:
    argv = ["--tiny", "--datasets", "synthetic", "--threads", "0"]
    assert paper_table1.main(argv) == 0
    res = _last_json(capsys)
    assert res["benchmark"] == "paper_table1"
    assert {r["profile"] for r in res["rows"]} == {"secure", "paper"}
    for r in res["rows"]:
        assert 0 <= r["encryip"] <= 1 and 0 <= r["original"] <= 1
        assert 0 <= r["trigger_accuracy"] <= 1 and 0 <= r["attribution"] <= 1
        assert r["history"]["EncryIP"] and r["history"]["original"]
    assert len(res["summary"]) == 2
    _save(outputs, "paper_table1", res)


def test_fig5_tiny(capsys: pytest.CaptureFixture[str], outputs: Path) -> None:
    assert paper_fig5_cost.main(["--tiny", "--ps", "1", "2", "--threads", "0"]) == 0
    res = _last_json(capsys)
    assert [r["P"] for r in res["rows"]] == [1, 2]
    assert len(res["keys_add_seconds"]) == 1
    assert len(res["per_licensee_train_seconds"]) == 2  # measured, not assumed
    assert all(r["ratio"] > 0 for r in res["rows"])
    _save(outputs, "paper_fig5_cost", res)


def test_attacks_tiny(capsys: pytest.CaptureFixture[str], outputs: Path) -> None:
    assert attacks.main(["--tiny", "--threads", "0"]) == 0
    res = _last_json(capsys)
    assert set(attacks.SECTIONS) <= set(res)
    # The crypto-level facts hold at any budget.
    fg = res["forgery"]
    assert any(r["forged_key_accuracy"]["mean"] == 1.0 for r in fg["paper"])
    assert not fg["secure"]["from_pk"]["found"]
    crypto = {(r["profile"], r["num_classes"]): r["advantage"] for r in res["legendre"]["crypto"]}
    assert crypto[("paper", 10)] == 1.0 and crypto[("secure", 10)] == 0.0
    for r in res["collusion"].values():
        assert r["two_licensees"]["false_positives"] <= 1.0
    assert len(res["removal"][0]["finetune"]) == 6 and len(res["removal"][0]["pruning"]) == 6
    # a deliberate leaker: the re-permuted file is still named by its weight fingerprint
    dodge = res["dodge"]
    assert [f["leaker_named"] for f in dodge["files"]] == [True, True, True]
    assert {r["detector"] for r in dodge["detectors"]} == {
        "input-stats",
        "key-holder",
        "file-holder",
    }
    _save(outputs, "attacks", res)


def test_render(outputs: Path, tmp_path: Path) -> None:
    page = run_all.render(run_all.load_results(outputs), tmp_path)
    text = page.read_text()
    for heading in (
        "Table 1", "Fig. 4", "Fig. 5", "Fig. 6", "Key forgery", "Distillation",
        "A licensee who leaks on purpose",
    ):  # fmt: skip
        assert heading in text
    assert "Not run yet: `python -m benchmarks.serving`" in text
    for png in ("fig4_convergence", "fig5_cost", "fig6_removal_accuracy", "relabel"):
        assert (tmp_path / "img" / f"{png}.png").stat().st_size > 0
