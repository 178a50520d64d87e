"""``encryip-export``: train a protected model once and write a release for many licensees.

Examples::

    encryip-export train --dataset mnist --arch cnn --licensees acme,globex,initech \\
        --epochs 2 --baseline --out release/
    encryip-export protect --model plain.pt --arch cnn --dataset mnist --out release/
    encryip-export protect --model mine.pt --arch torchvision:resnet18 \\
        --dataset photos/ --image-size 64 --mean 0.485,0.456,0.406 \\
        --std 0.229,0.224,0.225 --workers 4 --out release/
    torchrun --nproc_per_node 2 -m exporter.cli train --dataset mnist ...   # data-parallel
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from encryip_runtime.cli.options import add_passphrase_argument
from exporter import commands
from exporter.commands import COMMANDS

__all__ = ["build_parser", "main"]

PROG = "encryip-export"
ARCHS = ("cnn", "resnet18", "googlenet", "alexnet")


def _common(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default="mnist",
        help="mnist | fashion-mnist | synthetic | PATH.npz | IMAGEFOLDER_DIR (default: mnist)",
    )
    d.add_argument("--data-root", type=Path, default=None, help="where to look for dataset files")
    d.add_argument(
        "--download", action="store_true", help="allow torchvision to download MNIST/Fashion-MNIST"
    )
    d.add_argument(
        "--train-subset",
        type=int,
        default=None,
        metavar="N",
        help="stratified subset of N training images",
    )
    d.add_argument(
        "--test-subset",
        type=int,
        default=None,
        metavar="N",
        help="stratified subset of N test images",
    )
    d.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help="ImageFolder: resize the shorter side to S and center-crop S x S (as "
        "torchvision's Resize(S) + CenterCrop(S)); without it every image must have the "
        "first one's size",
    )
    d.add_argument(
        "--resize",
        type=int,
        default=None,
        metavar="R",
        help="ImageFolder: resize the shorter side to R before the S x S center crop (as "
        "Resize(R) + CenterCrop(S), e.g. --resize 256 --image-size 224; default R = S)",
    )
    d.add_argument(
        "--augment",
        action="store_true",
        help="random-resized-crop + horizontal flip on training images (off by default)",
    )
    d.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="DataLoader worker processes decoding images (default 0: in the main process)",
    )
    d.add_argument(
        "--mean",
        default=None,
        metavar="R,G,B",
        help="per-channel mean on the [0, 1] scale the model was trained with (torchvision's "
        "convention), folded into the ONNX graph after /255; default: measured on the "
        "training data",
    )
    d.add_argument("--std", default=None, metavar="R,G,B", help="per-channel std, as --mean")
    r = p.add_argument_group("release")
    r.add_argument("--out", type=Path, required=True, help="empty directory for the release")
    r.add_argument(
        "--licensees",
        default="acme,globex,initech",
        help="comma-separated licensee names, one key each (default: acme,globex,initech)",
    )
    r.add_argument(
        "--profile",
        choices=("secure", "paper"),
        default="secure",
        help="secure (ristretto255, default) or paper (the paper's Z_p^*: NOT secure)",
    )
    r.add_argument(
        "--decoder",
        choices=("joint", "argmax"),
        default="joint",
        help="paper profile's Φ⁻¹, recorded in the manifest: joint (the release's codeword "
        "with the highest summed block log-probability, default) or argmax (the paper's "
        "independent per-block argmax, for reproduction)",
    )
    r.add_argument(
        "--triggers", type=int, default=32, help="number of trigger inputs / Fake ciphertexts"
    )
    r.add_argument(
        "--trigger-source",
        choices=("data", "noise"),
        default=None,
        help="trigger images: data (held-out training images, indistinguishable from "
        "ordinary queries; train's default) or noise (synthetic patterns, easy to spot; "
        "protect's default: with the backbone frozen, a memorised natural trigger would "
        "also capture a few look-alike inputs, so served labels would not always be your "
        "model's)",
    )
    r.add_argument(
        "--probe-size", type=int, default=500, help="labelled test images kept in the vault"
    )
    r.add_argument("--model-name", default="encryip", help="name the server serves the model under")
    add_passphrase_argument(r, note="; the vault is encrypted at rest")
    t = p.add_argument_group("training")
    t.add_argument(
        "--arch",
        default=None,
        help="cnn | resnet18 | googlenet | alexnet (default: cnn) | torchvision:NAME (any "
        "torchvision classification builder, e.g. torchvision:resnet50, its stem as built)",
    )
    t.add_argument(
        "--model-factory",
        default=None,
        metavar="MODULE:CALLABLE",
        help="your own model: package.module:callable, called as callable(num_outputs) -> "
        "nn.Module (imported from PYTHONPATH or the current directory)",
    )
    t.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="local .pth state_dict to start from (nothing is downloaded); a head for "
        "another number of classes is left fresh",
    )
    t.add_argument(
        "--head",
        default=None,
        metavar="ATTR",
        help="the classifier head's attribute path, e.g. classifier[-1] (default: found "
        "among fc, classifier, classifier[-1], heads.head, head)",
    )
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    t.add_argument(
        "--max-trigger-epochs",
        type=int,
        default=3,
        metavar="N",
        help="self-check: before the release is published, verify-onnx must attribute every "
        "licensee file to its licensee at p < 1e-6 with every trigger recovered; while it "
        "does not, train up to N trigger-consolidation epochs, then fail without writing "
        "a release (default: 3; 0 = check only)",
    )
    t.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint path prefix: saved every epoch, resumed if present",
    )
    g = p.add_argument_group("GPU")
    g.add_argument(
        "--no-amp", action="store_true", help="no bf16 autocast on CUDA (on where supported)"
    )
    g.add_argument(
        "--no-channels-last", action="store_true", help="keep NCHW memory format on CUDA"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the training model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:  # one module per command (exporter/commands/)
        importlib.import_module(f"{commands.__name__}.{name}").register(sub, _common)
    return parser


def _validate(args: argparse.Namespace) -> list[str]:
    problems = []
    names = [n.strip() for n in args.licensees.split(",") if n.strip()]
    if not names:
        problems.append("--licensees: at least one name is required")
    else:
        from encryip_runtime.release.plan import validate_licensee_names

        try:
            validate_licensee_names(names)
        except ValueError as exc:
            problems.append(f"--licensees: {exc}")
    for flag in ("epochs", "batch_size", "triggers", "probe_size", "max_trigger_epochs"):
        v = getattr(args, flag)
        if v is None or v < (0 if flag in ("triggers", "max_trigger_epochs") else 1):
            problems.append(f"--{flag.replace('_', '-')}: must be positive, got {v}")
    if args.lr is not None and args.lr <= 0:
        problems.append(f"--lr: must be positive, got {args.lr}")
    problems += _validate_model_and_data(args)
    if args.out.exists() and any(args.out.iterdir()):
        problems.append(f"--out: '{args.out}' is not empty (a release is never overwritten)")
    validate = getattr(args, "validate", None)  # the command's own checks
    if validate is not None:
        problems += validate(args)
    return problems


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    return tuple(float(v) for v in text.split(","))


def _validate_model_and_data(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.arch is not None and args.model_factory is not None:
        problems.append("--arch and --model-factory: give one or the other")
    arch = args.arch or "cnn"
    if arch.startswith("torchvision:"):
        from exporter.models import torchvision_names

        name = arch.partition(":")[2]
        if name not in torchvision_names():
            problems.append(
                f"--arch: '{name}' is not a torchvision classification model "
                "(e.g. resnet50, mobilenet_v3_small, efficientnet_b0, vit_b_16)"
            )
    elif arch not in ARCHS:
        problems.append(f"--arch: '{arch}' is not one of {', '.join(ARCHS)} or torchvision:NAME")
    if args.model_factory is not None and ":" not in args.model_factory:
        problems.append(f"--model-factory: '{args.model_factory}' is not package.module:callable")
    if args.weights is not None and not args.weights.is_file():
        problems.append(f"--weights: '{args.weights}' does not exist")
    if (args.mean is None) != (args.std is None):
        problems.append("--mean and --std: give both or neither")
    for flag in ("mean", "std"):
        try:
            values = _floats(getattr(args, flag))
        except ValueError:
            problems.append(
                f"--{flag}: expected comma-separated numbers, got '{getattr(args, flag)}'"
            )
            continue
        if values is None:
            continue
        if len(values) not in (1, 3):
            problems.append(f"--{flag}: expected 1 or 3 values, got {len(values)}")
        if flag == "mean" and any(not 0.0 <= v <= 1.0 for v in values):
            problems.append(
                f"--mean: {args.mean} is not on the [0, 1] scale (torchvision's; divide "
                "0-255 values by 255)"
            )
        if flag == "std" and any(not 0.0 < v <= 1.0 for v in values):
            problems.append(f"--std: {args.std} must lie in (0, 1] (the [0, 1] scale)")
    if args.workers < 0:
        problems.append(f"--workers: must be >= 0, got {args.workers}")
    if args.image_size is not None and args.image_size < 1:
        problems.append(f"--image-size: must be positive, got {args.image_size}")
    if args.resize is not None and (args.image_size is None or args.resize < args.image_size):
        problems.append(f"--resize: needs --image-size and must be >= it, got {args.resize}")
    return problems


def _setup_distributed() -> None:
    """Under torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend)


def run(args: argparse.Namespace) -> int:
    from exporter.data import load_dataset
    from exporter.job import JobConfig
    from exporter.train import TrainConfig

    device = args.device
    if device == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    splits = load_dataset(
        args.dataset,
        root=args.data_root,
        download=args.download,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        seed=args.seed,
        image_size=args.image_size,
        resize=args.resize,
    )
    lr = args.lr
    if lr is None:  # protect: the head alone takes a larger step than a whole network
        lr = 1e-3 if args.tune == "head" else 3e-4
    cfg = TrainConfig(
        profile=args.profile,
        arch=args.arch or ("factory" if args.model_factory else "cnn"),
        model_factory=args.model_factory,
        weights=str(args.weights) if args.weights is not None else None,
        head=args.head,
        mean=_floats(args.mean),
        std=_floats(args.std),
        decoder=args.decoder,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=lr,
        num_triggers=args.triggers,
        seed=args.seed,
        device=device,
        num_threads=args.threads,
        licensees=tuple(n.strip() for n in args.licensees.split(",") if n.strip()),
        checkpoint=args.checkpoint,
        workers=args.workers,
        augment=args.augment,
        amp=not args.no_amp,
        channels_last=not args.no_channels_last,
        compile=args.compile,
    )
    job = JobConfig(
        train=cfg,
        dataset=str(args.dataset),
        baseline=getattr(args, "baseline", False),
        probe_size=args.probe_size,
        model_name=args.model_name,
        out=str(args.out),
        max_trigger_epochs=args.max_trigger_epochs,
        trigger_source=args.trigger_source or ("noise" if args.command == "protect" else "data"),
    )
    progress = False if args.no_progress else None
    metrics = args.execute(args, job, splits, progress)
    if metrics:
        from exporter.report import table1_markdown

        sys.stdout.write(table1_markdown(metrics))
        if "protect" in metrics:
            p = metrics["protect"]
            sys.stdout.write(
                f"\nProtected {p['model']} in {p['seconds']:.1f} s (--tune {p['tune']}): "
                f"accuracy {100 * p['accuracy_before']:.2f}% before, "
                f"{100 * p['accuracy_after']:.2f}% after; decrypted labels equal the "
                f"original model's predictions on {100 * p['agreement_with_original']:.2f}% "
                "of the test images\n"
            )
        sys.stdout.write(
            f"\nRelease written to {args.out}/ (keys: {args.out}/keys/, "
            f"vault: {args.out}/vault.json)\n"
        )
    return 0


def _setup(args: argparse.Namespace) -> None:
    """Logging, then every problem with the arguments before any work (exit 2)."""
    from encryip_runtime.cli.errors import UsageError
    from encryip_runtime.formats.vault_crypt import VaultSecretError, check_vault_passphrase

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Before any torch work: every intra-op thread then flushes subnormals (see
    # exporter.train.enable_flush_denormal; the flag is per thread and inherited).
    from exporter.train import enable_flush_denormal

    enable_flush_denormal()
    problems = _validate(args)
    if not problems:
        # The vault is written sealed at the end: fail now, not after training, without a
        # passphrase (never a silent plaintext vault, never a prompt that hangs).
        try:
            check_vault_passphrase(new=True)
        except VaultSecretError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageError(problems)


def _run_distributed(args: argparse.Namespace) -> int:
    try:
        _setup_distributed()
        rc = run(args)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # Ranks leave together: the others finish while rank 0 still exports and
            # self-checks, and a rank tearing gloo down with its peer still connected
            # died with "terminate called without an active exception" (CI, once). If
            # rank 0 fails instead, torchrun stops the ranks waiting here.
            dist.barrier()
        return rc
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    from encryip_runtime.cli.runner import run_cli

    parser = build_parser()
    parser.set_defaults(run=_run_distributed)
    return run_cli(
        PROG, parser, argv, error_code=lambda exc: 1, setup=_setup,
        expected=(ValueError, FileExistsError),
    )  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
