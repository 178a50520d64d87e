"""The README's main job, end to end on real MNIST, on a CPU in a few minutes:

1. train the protected model once (Algorithm 1) and, for comparison, the original;
2. export ONNX and a release for three licensees (keys, per-licensee variants, vault);
3. serve each licensee's variant over gRPC on 127.0.0.1 (Algorithm 2); each licensee
   predicts held-out images and decrypts locally; a wrong key reads noise;
4. a licensee's model file leaks: the arbitrator names that licensee, and does not
   claim a model trained independently on the same data.

Run: ``make demo`` (or ``python -m exporter.demo --help`` for the knobs).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("encryip.demo")


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _serve_and_decrypt(
    release: Path, names: Sequence[str], x: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """One localhost server per licensee variant; each licensee predicts and decrypts."""
    from encryip_runtime.client import EncryIPClient, decrypt_batch
    from encryip_runtime.crypto.scheme import SecretKey
    from encryip_runtime.crypto.scheme_v2 import CSLiteV2
    from encryip_runtime.formats import LicenseeKey
    from encryip_runtime.server.app import create_server
    from encryip_runtime.server.config import ServerConfig

    results: dict[str, Any] = {}
    for name in names:
        cfg = ServerConfig(
            release_dir=release / "licensees" / name,
            host="127.0.0.1",
            port=0,
            health_port=0,
            http_port=0,
            metrics_port=0,
            max_batch=64,
            log_level="WARNING",
        )
        server, port = create_server(cfg)
        server.start()
        try:
            with EncryIPClient(f"127.0.0.1:{port}") as client:
                key = client.load_key(release / "keys" / f"{name}.key")
                t0 = time.perf_counter()
                preds: list[bytes] = []
                for i in range(0, len(x), 100):
                    preds.extend(client.predict(x[i : i + 100]))
                seconds = time.perf_counter() - t0
                labels = decrypt_batch(preds, key)
                g = key.scheme.group
                wrong = LicenseeKey(
                    key.scheme,
                    "nobody",
                    key.pk,
                    key.scheme.random_key()
                    if isinstance(key.scheme, CSLiteV2)
                    else SecretKey(g.random_scalar(), g.random_scalar()),
                    key.class_names,
                    "",
                )
                wrong_labels = decrypt_batch(preds, wrong)
                results[name] = {
                    "accuracy": float((labels == y).mean()),
                    "accuracy_wrong_key": float((wrong_labels == y).mean()),
                    "requests_per_s": len(x) / 100 / seconds,
                    "example_ciphertext": preds[0].hex()[:48] + "…",
                    "example_label": f"{int(labels[0])} ({key.class_names[int(labels[0])]})",
                }
        finally:
            server.stop(grace=2)
    return results


def _independent_model(
    data: Any,
    output_size: int,
    block: int | None,
    arch: str,
    epochs: int,
    seed: int,
    path: Path,
) -> Path:
    """A model trained on the same data with the same architecture and output size,
    without EncryIP (plain labels in the first K outputs): the arbitrator must not claim it."""
    import torch

    from exporter.export_onnx import export_onnx
    from exporter.models import build_model
    from exporter.train import TrainConfig, train_model

    k = len(data.class_names)
    targets = np.zeros((k, output_size), dtype=np.float32)
    targets[np.arange(k), np.arange(k)] = 1.0
    torch.manual_seed(seed + 1000)
    model = build_model(arch, data.input_shape[0], output_size, data.input_shape[1])
    cfg = TrainConfig(arch=arch, epochs=epochs, seed=seed + 1000, device="cpu")
    if block is not None:  # paper profile: plain labels as three identical one-hot blocks
        targets = np.zeros((k, output_size), dtype=np.float32)
        for b in range(3):
            targets[np.arange(k), b * block + np.arange(k) + 1] = 1.0
    res = train_model(model, data, targets, cfg, block=block, progress=False, tag="independent")
    res.model.eval()
    export_onnx(res.model.cpu(), torch.from_numpy(data.x_test[:8]), path)
    return path


# A demo value, announced on stdout; a real release uses a secret one.
DEMO_PASSPHRASE = "encryip-demo-passphrase"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m exporter.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--profile", choices=("secure", "paper"), default="secure")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument(
        "--eval-images", type=int, default=1000, help="held-out images each licensee sends"
    )
    p.add_argument("--out", type=Path, default=Path("demo-release"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _demo_passphrase() -> None:
    """The vault is encrypted at rest; the demo uses a fixed passphrase and says so."""
    from encryip_runtime.formats.vault_crypt import PASSPHRASE_ENV

    if os.environ.get(PASSPHRASE_ENV):
        _say(f"(vault passphrase: taken from {PASSPHRASE_ENV})")
        return
    os.environ[PASSPHRASE_ENV] = DEMO_PASSPHRASE
    _say(
        f"(vault passphrase: the demo sets {PASSPHRASE_ENV}={DEMO_PASSPHRASE!r}; "
        "a real release uses a secret one, or --passphrase-file)"
    )


def _train(args: argparse.Namespace, names: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    from exporter.data import load_dataset
    from exporter.job import JobConfig, arrays_from_splits, run_train_job
    from exporter.report import table1_markdown
    from exporter.train import TrainConfig

    _say(
        f"== 1. Train once: {args.dataset}, {args.arch}, profile {args.profile}, "
        f"{args.epochs} epochs "
        "(EncryIP and the original model, same seed and data order)"
    )
    splits = load_dataset(args.dataset, train_subset=args.train_subset, seed=args.seed)
    data = arrays_from_splits(splits)
    cfg = TrainConfig(
        profile=args.profile,
        arch=args.arch,
        epochs=args.epochs,
        seed=args.seed,
        licensees=tuple(names),
    )
    metrics = run_train_job(
        JobConfig(train=cfg, dataset=args.dataset, baseline=True, out=str(args.out)), data
    )
    _say(table1_markdown(metrics))
    return data, metrics


def _show_release(out: Path) -> None:
    _say(
        f"== 2. Release in {out}/: model.onnx, manifest.json, keys/, licensees/, "
        "vault.json + vault.npz (encrypted at rest), report/"
    )
    for path in sorted(out.rglob("*")):
        if path.is_file():
            _say(f"   {path.relative_to(out)}  ({path.stat().st_mode & 0o777:o})")


def _serve(args: argparse.Namespace, data: Any, names: Sequence[str]) -> dict[str, Any]:
    _say(
        f"\n== 3. Serve each licensee's variant on 127.0.0.1; "
        f"{args.eval_images} held-out images each"
    )
    idx = np.random.default_rng(args.seed + 5).choice(
        len(data.x_test), args.eval_images, replace=False
    )
    served = _serve_and_decrypt(args.out, names, data.x_test[idx], data.y_test[idx])
    _say(
        "| licensee | accuracy (own key) | accuracy (wrong key) "
        "| example confused label | decrypted |"
    )
    _say("|---|---|---|---|---|")
    for name, r in served.items():
        _say(
            f"| {name} | {r['accuracy']:.4f} | {r['accuracy_wrong_key']:.4f} "
            f"| {r['example_ciphertext']} | "
            f"{r['example_label']} |"
        )
    return served


def _leak(args: argparse.Namespace, data: Any) -> bool:
    """globex's file leaks: named; an independently trained model: not claimed."""
    from encryip_runtime.arbitrator import verify_onnx

    _say("\n== 4. A leak: globex's model file turns up elsewhere")
    leaked = args.out / "licensees" / "globex" / "model.onnx"
    verdict = verify_onnx(leaked, args.out / "vault.json")
    _say(
        f"   verify-onnx {leaked}: owned={verdict.owned}, licensee={verdict.licensee}, "
        f"p={verdict.p_value:.3g}"
    )
    size, block = _output_layout(args.out)
    other = _independent_model(
        data,
        size,
        block,
        args.arch,
        1,
        args.seed,
        args.out.parent / f".{args.out.name}-independent.onnx",
    )
    v2 = verify_onnx(other, args.out / "vault.json")
    _say(
        f"   verify-onnx on an independently trained model: owned={v2.owned}, "
        f"licensee={v2.licensee}, "
        f"p={v2.p_value:.3g}"
    )
    other.unlink(missing_ok=True)
    return bool(verdict.owned and verdict.licensee == "globex" and not v2.owned)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    from exporter.train import enable_flush_denormal

    enable_flush_denormal()  # before torch starts its threads (every training here flushes)
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "matplotlib", "encryip_runtime.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    names = ("acme", "globex", "initech")
    if args.out.exists():
        shutil.rmtree(args.out)
    t_start = time.perf_counter()
    _demo_passphrase()
    data, _metrics = _train(args, names)
    _show_release(args.out)
    served = _serve(args, data, names)
    ok = _leak(args, data) and all(r["accuracy"] > 0.9 for r in served.values())
    _say(
        f"\nDone in {time.perf_counter() - t_start:.0f}s: "
        f"{'all checks passed' if ok else 'SOMETHING IS WRONG'}"
    )
    return 0 if ok else 1


def metrics_output_size(release: Path) -> int:
    return _output_layout(release)[0]


def _output_layout(release: Path) -> tuple[int, int | None]:
    """The release's output size and one-hot block width (paper: p; secure: None)."""
    from encryip_runtime.crypto.profiles import profile_of
    from encryip_runtime.formats import Manifest

    m = Manifest.load(release / "manifest.json")
    return m.output_size, profile_of(m.scheme).block_width(m.output_size)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
