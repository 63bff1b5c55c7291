#!/usr/bin/env bash
# One prepared GPU run: llama-server with CUDA, built from the pinned llama.cpp (the tree vendored
# in the llama-cpp-python 0.3.36 sdist), serving a 3B-shaped random Orpheus GGUF generated on the
# machine, through the backend launcher; tokens/s for 1 and 4 concurrent streams (and 8, to show
# where per-stream speed falls below real time), against the 82 tokens/s real-time line.
#
#   bash bench/gpu_backend.sh            # from the repository root, on the GPU machine
#
# Needs: nvcc + cmake; python3 with numpy, httpx and gguf (pip install gguf==0.19.0 numpy httpx);
# the sdist, found at $LLAMA_SDIST, else shared/llama_cpp_python-0.3.36.tar.gz, else
# ~/.cache/orpheus-build/llama-cpp-python-0.3.36/ (the GPU machine has no network).
# Writes everything under ${OUT:-./gpu-bench-out}; the last line of bench.json is the summary.
# Budget: ~6 min CUDA build (16 cores, one architecture), ~1 min model generation, ~2 min bench.
set -euo pipefail

OUT="${OUT:-./gpu-bench-out}"
mkdir -p "$OUT"
WORK="${WORK:-/tmp/orpheus-gpu-bench}"
PY="${PYTHON:-python3}"
VERSION=0.3.36
SDIST="${LLAMA_SDIST:-}"
for candidate in "shared/llama_cpp_python-$VERSION.tar.gz" \
                 "$HOME/.cache/orpheus-build/llama-cpp-python-$VERSION/llama_cpp_python-$VERSION.tar.gz"; do
  [[ -z "$SDIST" && -f "$candidate" ]] && SDIST="$candidate"
done
[[ -n "$SDIST" ]] || { echo "no llama-cpp-python $VERSION sdist: set LLAMA_SDIST" >&2; exit 2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
CUDA_ARCH="${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}"

server="$WORK/llama-server"
if [[ ! -x "$server" ]]; then
  mkdir -p "$WORK/src"
  tar -xzf "$SDIST" -C "$WORK/src" --strip-components=1
  start=$(date +%s)
  # The Dockerfile's flags, with this GPU's architecture instead of the L4's 89.
  cmake -S "$WORK/src/vendor/llama.cpp" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}-real" -DGGML_NATIVE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
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
