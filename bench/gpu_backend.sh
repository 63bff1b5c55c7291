#!/usr/bin/env bash
# One prepared GPU run: llama-server with CUDA, built from the pinned llama.cpp (the tree vendored
# in the llama-cpp-python 0.3.36 sdist), serving a 3B-shaped random Orpheus GGUF generated on the
# machine, through the backend launcher; tokens/s for 1 and 4 concurrent streams (and 8, to show
# where per-stream speed falls below real time), against the 82 tokens/s real-time line; then
# several models (issue 14): time to first token of a resident 3B model vs one the router must
# load in place of the other, and the GPU memory one resident model takes (nvidia-smi), which is
# what orpheus_deploy/gpu_memory.py's MODEL_OVERHEAD_GIB allowance should be checked against.
#
#   bash bench/gpu_backend.sh --prepare  # first, on the CPU machine (has the sdist, has PyPI)
#   bash bench/gpu_backend.sh            # then from the repository root, on the GPU machine
#
# --prepare writes gpu-bench-src/llama-cpp.tar.gz: the sdist's llama.cpp tree without models/,
# docs/, tests/ (~10 MB instead of 76), small enough to travel with the working tree (the GPU
# machine has no network; the path is untracked, not ignored, so the device tool carries it).
# Needs on the GPU machine: nvcc + cmake; python3 with numpy, httpx and gguf==0.19.0 (carry a
# small venv or a wheel directory if the machine lacks them).
# Writes everything under ${OUT:-./gpu-bench-out}; the last line of bench.json is the summary.
# Budget: ~6 min CUDA build (16 cores, one architecture), ~1 min model generation, ~2 min bench,
# ~1 min model switch.
set -euo pipefail

VERSION=0.3.36
SRC_TAR="gpu-bench-src/llama-cpp.tar.gz"
SDIST="${LLAMA_SDIST:-${ORPHEUS_BUILD_CACHE:-$HOME/.cache/orpheus-build}/llama_cpp_python-$VERSION.tar.gz}"

if [[ "${1:-}" == "--prepare" ]]; then
  [[ -f "$SDIST" ]] || { echo "no sdist at $SDIST: run .ci/build_llama.sh first" >&2; exit 2; }
  tmp="$(mktemp -d)"
  tar -xzf "$SDIST" -C "$tmp" --strip-components=1
  mkdir -p "$(dirname "$SRC_TAR")"
  tar -czf "$SRC_TAR" -C "$tmp/vendor" --exclude=llama.cpp/models --exclude=llama.cpp/docs \
    --exclude=llama.cpp/tests --exclude=llama.cpp/benches --exclude=.git llama.cpp
  rm -rf "$tmp"
  ls -la "$SRC_TAR"
  exit 0
fi

OUT="${OUT:-./gpu-bench-out}"
mkdir -p "$OUT"
WORK="${WORK:-/tmp/orpheus-gpu-bench}"
PY="${PYTHON:-python3}"
[[ -f "$SRC_TAR" ]] || { echo "no $SRC_TAR: run bash bench/gpu_backend.sh --prepare first" >&2; exit 2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
CUDA_ARCH="${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}"

server="$WORK/llama-server"
if [[ ! -x "$server" ]]; then
  mkdir -p "$WORK/src/vendor"
  tar -xzf "$SRC_TAR" -C "$WORK/src/vendor"
  start=$(date +%s)
  # The Dockerfile's flags, with this GPU's architecture instead of the L4's 89.
  cmake -S "$WORK/src/vendor/llama.cpp" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}-real" -DGGML_NATIVE=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >"$OUT/cmake.log" 2>&1
  cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >>"$OUT/cmake.log" 2>&1
  cp "$WORK/build/bin/llama-server" "$server"
  echo "build_s=$(( $(date +%s) - start ))" | tee -a "$OUT/timings.txt"
fi

# 200 frames = 1401 tokens per request: long enough for a steady decode rate.
for quant in Q8_0 Q4_0; do
  model="$WORK/orpheus-3b-$quant.gguf"
  if [[ ! -f "$model" ]]; then
    "$PY" -m tests.fixtures.orpheus_gguf --out "$model" --shape 3b --quant "$quant" --frames 200 \
      | tee -a "$OUT/timings.txt"
  fi
done

export LLAMA_SERVER_BIN="$server"
for quant in Q8_0 Q4_0; do
  for streams in 1 4 8; do
    "$PY" -m bench.backend --model "$WORK/orpheus-3b-$quant.gguf" --engines llama-server \
      --streams "$streams" --repeats 2 --max-tokens 1500 2>>"$OUT/bench.log" \
      | tail -1 | tee -a "$OUT/bench.json"
  done
done

# Several models: the two 3B files above, one resident at a time (MODELS_MAX=1), 4 slots x 4096.
"$PY" -m bench.backend --engines "" --model-switch --repeats 3 --switch-tokens 200 \
  --switch-models "$WORK/orpheus-3b-Q8_0.gguf,$WORK/orpheus-3b-Q4_0.gguf" 2>>"$OUT/bench.log" \
  | tail -1 | tee -a "$OUT/bench.json"
