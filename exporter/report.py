"""The release's ``report/``: metrics.json, training curves (paper Fig. 4), Table-1 Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from encryip_runtime.formats.jsonio import atomic_write_bytes

__all__ = ["table1_markdown", "write_report"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def table1_markdown(metrics: dict[str, Any]) -> str:
    """The paper's Table 1 for one run: original, EncryIP (Δ, verification), incorrect key."""
    acc = metrics["accuracy"]
    cfg = metrics.get("config", {})
    lines = [
        f"# EncryIP summary: {cfg.get('dataset', '?')} / {cfg.get('arch', '?')} / "
        f"profile {cfg.get('profile', '?')}",
        "",
        "| method | accuracy | Δ vs original | verification (trigger recovery) |",
        "|---|---|---|---|",
    ]
    orig = acc.get("original")
    if orig is not None:
        lines.append(f"| original | {orig:.4f} | — | — |")
    delta = "—" if orig is None else f"{100 * (acc['encryip'] - orig):+.2f} pp"
    lines.append(
        f"| EncryIP (licensee key) | {acc['encryip']:.4f} | {delta} | "
        f"{metrics['verification']['trigger_accuracy']:.3f} |"
    )
    lines.append(f"| EncryIP_Incorrect (wrong key) | {acc['incorrect_key']:.4f} | — | — |")
    per = metrics.get("accuracy_per_licensee", {})
    if per:
        lines += [
            "",
            "Per licensee (decrypted with its own key): "
            + ", ".join(f"{k} {v:.4f}" for k, v in per.items()),
        ]
    ts = metrics.get("train_seconds", {})
    if ts.get("original"):
        lines += [
            "",
            f"Training time (same epochs): original {ts['original']:.1f}s, EncryIP "
            f"{ts['encryip']:.1f}s wall (ratio {ts['encryip'] / ts['original']:.3f})"
            + (f"; CPU ratio {ts['cpu_ratio']:.3f}" if ts.get("cpu_ratio") is not None else "")
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_curves(path: Path, history: dict[str, list[dict[str, Any]]]) -> bool:
    """Accuracy per epoch, original vs EncryIP (paper Fig. 4). False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, rows in history.items():
        if rows:
            ax.plot(
                [r["epoch"] for r in rows],
                [r["test_accuracy"] for r in rows],
                marker="o",
                label=name,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("Convergence: original vs EncryIP")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(out_dir: Path, metrics: dict[str, Any]) -> list[Path]:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    atomic_write_bytes(d / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    written.append(d / "metrics.json")
    atomic_write_bytes(d / "table1.md", table1_markdown(metrics).encode())
    written.append(d / "table1.md")
    if write_curves(d / "curves.png", metrics.get("history", {})):
        written.append(d / "curves.png")
    return written
