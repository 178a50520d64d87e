"""``encryip-export train``: train a protected model from scratch (Algorithm 1)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

NAME = "train"


def register(subparsers: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser(
        NAME,
        help="train a protected model from scratch (Algorithm 1)",
        description="Train once; write model.onnx, manifest, keys, per-licensee "
        "variants, the vault and a report into --out.",
    )
    add_common(p)
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also train the original model (same arch, seed, data order, epochs) to compare",
    )
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, job: Any, splits: Any, progress: bool | None) -> Any:
    from exporter.job import run_train_job

    return run_train_job(job, splits, progress=progress)
