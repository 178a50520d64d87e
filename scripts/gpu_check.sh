#!/usr/bin/env bash
# GPU checks CI cannot run (it has no GPU): the exporter's CUDA path end to end.
#
#   scripts/gpu_check.sh [OUT_DIR]        (env: PYTHON, MNIST_ROOT)
#
# 1. cnn, 2 epochs on cuda with the baseline: Algorithm 1 on the GPU, ONNX export, the
#    exporter's own onnxruntime parity and trigger checks, the report;
# 2. resnet18 on a 20k subset, 1 epoch on cuda (the architecture where a GPU matters);
# 3. the same resnet18 epoch on the CPU for the speed ratio (threads: all cores);
# 4. benchmarks.crypto on every core: SampDist rows/s per thread count (the protected
#    throughput ceiling where inference is on the GPU) beside libsodium's own scaling.
# Each step prints the exporter's summary; the last lines are a JSON digest.
set -euo pipefail
out=${1:-gpu-check-out}
py=${PYTHON:-python3}
data=${MNIST_ROOT:-data/mnist}
mkdir -p "$out"
"$py" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script checks the GPU path"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
EOF
run() {  # name, then exporter arguments
  local name=$1; shift
  local t0=$SECONDS
  "$py" -m exporter.cli train --dataset mnist --data-root "$data" --no-progress \
    --out "$out/$name" "$@" 2>&1 | tee "$out/$name.log"
  echo "$name: $((SECONDS - t0)) s wall" | tee -a "$out/walls.txt"
}
run cnn-cuda --arch cnn --epochs 2 --device cuda --baseline
run resnet18-cuda --arch resnet18 --epochs 1 --train-subset 20000 --test-subset 2000 --device cuda
run resnet18-cpu --arch resnet18 --epochs 1 --train-subset 20000 --test-subset 2000 --device cpu
"$py" -m benchmarks.crypto | tee "$out/crypto.log" | tail -n 1 > "$out/crypto.json"
"$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
digest = {}
for name in ("cnn-cuda", "resnet18-cuda", "resnet18-cpu"):
    m = json.loads((out / name / "report" / "metrics.json").read_text())
    digest[name] = {k: m.get(k) for k in ("accuracy", "verification", "train_seconds") if k in m}
digest["walls"] = (out / "walls.txt").read_text().splitlines()
crypto = json.loads((out / "crypto.json").read_text())
digest["sampdist_rows_per_s_by_threads"] = crypto["secure_threads"]["rows_per_s"]
digest["raw_thread_scaling"] = crypto["raw_thread_scaling"]
print(json.dumps(digest))
EOF
