#!/usr/bin/env bash
# GPU checks CI cannot run (it has no GPU): the exporter's CUDA path end to end.
#
#   scripts/gpu_check.sh [OUT_DIR]     (env: PYTHON, MNIST_ROOT, DEVICE, EXTRA_ARGS)
#
# 1. cnn, 2 epochs on cuda with the baseline: Algorithm 1 on the GPU, ONNX export, the
#    exporter's own onnxruntime parity and trigger checks, the report;
# 2. benchmarks.crypto on every core: SampDist rows/s per thread count, beside
#    libsodium's own scaling, and step 1's release's `protect` per thread count next to
#    its model's plain onnxruntime rows/s (the protected throughput ceiling where
#    inference is on the GPU);
# 3. resnet18 on a 20k subset, 1 epoch on cuda (the architecture where a GPU matters);
# 4. the same resnet18 epoch on the CPU for the speed ratio (threads: all cores);
# 5. cnn, 2 epochs on cuda under --compile (torch.compile of the training model).
# A failed step is reported and the next one still runs; the exit status is 1 if any
# failed. The last line is a JSON digest. DEVICE=cpu with EXTRA_ARGS="--train-subset
# 2000 --test-subset 500" dry-runs the script without a GPU.
set -uo pipefail
out=${1:-gpu-check-out}
py=${PYTHON:-python3}
data=${MNIST_ROOT:-data/mnist}
device=${DEVICE:-cuda}
read -r -a extra <<<"${EXTRA_ARGS:-}"
mkdir -p "$out"
: >"$out/walls.txt"
failed=()
if [ "$device" = cuda ]; then
  "$py" - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device: this script checks the GPU path"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
fi
step() {  # name, then the command; its output goes to OUT/name.log too
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*"
  if "$@" 2>&1 | tee "$out/$name.log"; then
    echo "$name: $((SECONDS - t0)) s wall" | tee -a "$out/walls.txt"
  else
    echo "$name: FAILED after $((SECONDS - t0)) s" | tee -a "$out/walls.txt"
    failed+=("$name")
  fi
}
train() {  # name, then exporter arguments
  local name=$1; shift
  step "$name" "$py" -m exporter.cli train --dataset mnist --data-root "$data" --no-progress \
    --out "$out/$name" "$@" "${extra[@]}"
}
cpu_or() { if [ "$device" = cpu ]; then echo cpu; else echo "$1"; fi; }
train cnn-cuda --arch cnn --epochs 2 --device "$(cpu_or cuda)" --baseline
licensee=$(ls -d "$out"/cnn-cuda/licensees/*/ 2>/dev/null | head -n 1)
step crypto "$py" -m benchmarks.crypto ${licensee:+--release "$licensee"}
tail -n 1 "$out/crypto.log" >"$out/crypto.json"
train resnet18-cuda --arch resnet18 --epochs 1 --train-subset 20000 --test-subset 2000 \
  --device "$(cpu_or cuda)"
train resnet18-cpu --arch resnet18 --epochs 1 --train-subset 20000 --test-subset 2000 \
  --device cpu
train cnn-cuda-compile --arch cnn --epochs 2 --device "$(cpu_or cuda)" --compile
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
digest = {}
for name in ("cnn-cuda", "resnet18-cuda", "resnet18-cpu", "cnn-cuda-compile"):
    f = out / name / "report" / "metrics.json"
    if f.is_file():
        m = json.loads(f.read_text())
        keys = ("accuracy", "verification", "train_seconds")
        digest[name] = {k: m.get(k) for k in keys if k in m}
digest["walls"] = (out / "walls.txt").read_text().splitlines()
try:
    crypto = json.loads((out / "crypto.json").read_text())
except ValueError:
    crypto = None
if crypto:
    digest["cores"] = crypto["env"]["usable_cores"]
    digest["sampdist_rows_per_s_by_threads"] = crypto["secure_threads"]["rows_per_s"]
    digest["raw_thread_scaling"] = crypto["raw_thread_scaling"]
    p = crypto.get("protect_threads")
    if p:
        digest["protect_rows_per_s_by_threads"] = p["rows_per_s"]
        digest["protect_components"] = p["components"]
        digest["plain_inference_rows_per_s_b256"] = p["plain_inference_rows_per_s_b256"]
print(json.dumps(digest))
PY
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
