"""Removal attacks judged by the arbitrator: where do ownership and attribution break?

For each profile: train a protected model (Algorithm 1), write its release, take one
licensee's leaked copy (its head rows permuted as in its ONNX file), then

* fine-tune it on five consecutive parts of held-out data (the paper's removal
  protocol: Algorithm-1 class targets in the thief's own output order, no triggers),
  judging after every part;
* prune 10-50 % of its weights by global magnitude (conv + linear), judging each.

Each judgement is ``verify-onnx``'s decision (``arbitrator.verify_onnx.decide``) on the
attacked model's raw outputs, plus its accuracy under the leaker's key.

    python -m benchmarks.removal [--dataset synthetic|mnist] [--train N] [--held N]
                                 [--epochs E] [--profiles secure paper]

The last line of stdout is the JSON result (``benchmarks.common.emit``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.removal")


def _judge(vault: Any, arrays: Any, plan: Any, perm: np.ndarray, model: Any, data: Any,
           leaker: Any) -> dict[str, Any]:  # fmt: skip
    import torch

    from encryip_runtime.arbitrator.verify_onnx import decide
    from exporter.train import decrypted_labels, predict_logits

    dev = torch.device("cpu")
    lt = predict_logits(model, arrays.trigger_inputs, dev)
    lp = predict_logits(model, arrays.probe_inputs, dev)
    v = decide(vault, arrays, lt, lp, 1e-6, "attacked", "vault")
    # accuracy as the leaker reads it: undo its order, decrypt with its key
    logits = predict_logits(model, data.x_test, dev)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    acc = float((decrypted_labels(plan, logits[:, inv], leaker.sk) == data.y_test).mean())
    own = next(c for c in v.candidates if c.name == leaker.name)
    return {
        "accuracy": acc,
        "owned": v.owned,
        "licensee": v.licensee,
        "attribution": v.attribution,
        "log10_p": round(v.log10_p_value, 2),
        "leaker_trigger_hits": own.trigger_hits,
        "min_hits": v.min_trigger_hits,
        "recovery_consistent": v.slot_recovery.consistent_triggers,
        "recovery_log10_p": round(v.slot_recovery.log10_p_value, 2),
    }


def run_profile(profile: str, data: Any, held: Any, epochs: int, tmp: Path) -> dict[str, Any]:
    import torch
    from torch import nn

    from encryip_runtime.arbitrator.inputs import load_vault_with_arrays
    from encryip_runtime.formats.manifest import InputSpec
    from encryip_runtime.release import plan_protection, write_release
    from exporter.export_onnx import export_onnx
    from exporter.models import build_model, head_of
    from exporter.train import DataArrays, TrainConfig, block_width, train_model
    from exporter.triggers import make_trigger_inputs

    names = ("acme", "globex", "initech")
    cfg = TrainConfig(profile=profile, epochs=epochs, batch_size=64, lr=2e-3, num_triggers=32,
                      licensees=names, device="cpu")  # fmt: skip
    plan = plan_protection(profile, list(data.class_names), list(names), cfg.num_triggers)
    trig_x = make_trigger_inputs(cfg.num_triggers, data.input_shape, seed=11)
    block = block_width(plan)
    torch.manual_seed(0)
    c, h, _ = data.input_shape
    model = build_model("cnn", c, plan.output_size, h)
    train_model(model, data, plan.class_targets(), cfg, block=block, trigger_x=trig_x,
                trigger_targets=plan.trigger_targets(), progress=False)  # fmt: skip
    model.eval()
    onnx_path = tmp / f"{profile}.onnx"
    export_onnx(model, torch.from_numpy(data.x_test[:8]), onnx_path, exporters=("legacy",),
                argmax_block=block)  # fmt: skip
    rng = np.random.default_rng(7)
    idx = rng.choice(len(data.x_test), min(300, len(data.x_test)), replace=False)
    root = tmp / f"release-{profile}"
    write_release(root, plan, onnx_path.read_bytes(),
                  input_spec=InputSpec("pixels", "uint8", data.input_shape),
                  trigger_inputs=trig_x, probe_inputs=data.x_test[idx],
                  probe_labels=data.y_test[idx])  # fmt: skip
    vault, arrays, _ = load_vault_with_arrays(root)
    leaker = vault.licensee("globex")
    perm = np.asarray(leaker.permutation, dtype=np.int64)
    stolen = copy.deepcopy(model)  # the leaked file as a torch model: head rows permuted
    head = head_of(stolen)
    with torch.no_grad():
        head.weight.copy_(head.weight[torch.from_numpy(perm)].clone())
        head.bias.copy_(head.bias[torch.from_numpy(perm)].clone())

    def judge(m: Any) -> dict[str, Any]:
        return _judge(vault, arrays, plan, perm, m, data, leaker)

    out: dict[str, Any] = {"profile": profile, "before": judge(stolen), "finetune": [],
                           "pruning": []}  # fmt: skip
    ft = copy.deepcopy(stolen)
    targets = plan.class_targets()[:, perm]  # the thief trains in its own output order
    ft_cfg = replace(cfg, epochs=1, lr=cfg.lr / 2, seed=1)
    for k, part in enumerate(np.array_split(np.arange(len(held.x_train)), 5), start=1):
        sub = DataArrays(held.x_train[part], held.y_train[part], held.x_test, held.y_test,
                         held.class_names)  # fmt: skip
        train_model(ft, sub, targets, ft_cfg, block=block, progress=False, tag=f"ft{k}")
        ft.eval()
        out["finetune"].append({"part": k, **judge(ft)})
        log.info("%s fine-tune part %d: %s", profile, k, out["finetune"][-1])
    for frac in (0.1, 0.2, 0.3, 0.4, 0.5):
        m = copy.deepcopy(stolen)
        params = [mod.weight for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
        flat = torch.cat([p.detach().abs().flatten() for p in params])
        cut = torch.quantile(flat, frac) if flat.numel() < 16_000_000 else flat.kthvalue(
            int(frac * flat.numel())).values  # fmt: skip
        with torch.no_grad():
            for p in params:
                p.mul_((p.abs() > cut).to(p.dtype))
        out["pruning"].append({"fraction": frac, **judge(m)})
        log.info("%s pruning %.0f%%: %s", profile, 100 * frac, out["pruning"][-1])
    return out


def _table(res: dict[str, Any]) -> list[str]:
    rows = ["| profile | attack | accuracy | owned | licensee | leaker hits / needed | log10 p |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip

    def row(name: str, r: dict[str, Any]) -> str:
        return (f"| {res['profile']} | {name} | {r['accuracy']:.3f} | {r['owned']} | "
                f"{r['licensee']} | {r['leaker_trigger_hits']}/{r['min_hits']} | "
                f"{r['log10_p']} |")  # fmt: skip

    rows.append(row("none", res["before"]))
    rows += [row(f"fine-tune part {r['part']}", r) for r in res["finetune"]]
    rows += [row(f"prune {int(100 * r['fraction'])}%", r) for r in res["pruning"]]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import emit, setup_logging

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.removal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--held", type=int, default=2000, help="held-out images for fine-tuning")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--profiles", nargs="+", default=["secure", "paper"])
    args = p.parse_args(argv)
    setup_logging()
    from exporter.data import load_dataset, make_synthetic
    from exporter.job import arrays_from_splits

    if args.dataset == "synthetic":
        data = arrays_from_splits(make_synthetic(args.train, 500, seed=0))
        held = arrays_from_splits(make_synthetic(args.held, 500, seed=1))
    else:
        splits = load_dataset(args.dataset, train_subset=args.train + args.held,
                              test_subset=1000, seed=0)  # fmt: skip
        full = arrays_from_splits(splits)
        from exporter.train import DataArrays

        data = replace(full, x_train=full.x_train[: args.train], y_train=full.y_train[: args.train])
        held = DataArrays(full.x_train[args.train :], full.y_train[args.train :], full.x_test,
                          full.y_test, full.class_names)  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for profile in args.profiles:
            results.append(run_profile(profile, data, held, args.epochs, Path(tmp)))
    import sys

    for res in results:
        sys.stdout.write("\n".join(_table(res)) + "\n\n")
    emit({"benchmark": "removal", "dataset": args.dataset, "train": args.train,
          "held": args.held, "epochs": args.epochs, "results": results})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
