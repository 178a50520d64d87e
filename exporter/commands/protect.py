"""``encryip-export protect``: protect an already trained plain classifier."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "protect"


def register(subparsers: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser(
        NAME,
        help="protect an already trained plain classifier (brief fine-tune)",
        description="Turn a trained classifier's head into EncryIP's slot order "
        "(secure profile) and fine-tune briefly so the triggers are learned.",
    )
    add_common(p)
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="trained plain model: a torch.save'd nn.Module, or a state_dict for --arch / "
        "--model-factory",
    )
    p.add_argument(
        "--tune",
        choices=("head", "all"),
        default="head",
        help="head (default): train the trigger rows of the head only; the backbone and "
        "the class rows keep your weights, so served labels are your model's predictions. "
        "all: fine-tune the whole network",
    )
    p.set_defaults(epochs=1, lr=None, execute=execute, validate=validate)


def validate(args: argparse.Namespace) -> list[str]:
    """protect's own checks (after the common ones)."""
    from encryip_runtime.crypto.profiles import profile_of

    problems = []
    if not profile_of(args.profile).uses_codebook:
        problems.append(
            "--profile: protect needs the secure profile (the paper profile's head is 3p wide)"
        )
    if not args.model.is_file():
        problems.append(f"--model: '{args.model}' does not exist")
    return problems


def execute(args: argparse.Namespace, job: Any, splits: Any, progress: bool | None) -> Any:
    from exporter.protect import run_protect_job

    return run_protect_job(job, splits, args.model, tune=args.tune, progress=progress)
