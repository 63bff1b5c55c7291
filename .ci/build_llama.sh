#!/usr/bin/env bash
# Build llama.cpp twice from ONE pinned source archive (the llama-cpp-python sdist vendors the
# whole llama.cpp tree): the llama-cpp-python wheel (local stack, Python-side tests) and the
# `llama-server` binary (what the backend image runs). Results are cached by version, so a second
# run on the same machine is instant.
#
# GGML_NATIVE=OFF: a -march=native build crashes on quantized models on the CI CPU (AMX).
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${ORPHEUS_BUILD_CACHE:-$HOME/.cache/orpheus-build}/llama-cpp-python-${LLAMA_CPP_PYTHON_VERSION}"
PY="${PYTHON:-python}"
JOBS="${JOBS:-$(nproc)}"
CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DLLAVA_BUILD=OFF"

mkdir -p "$CACHE"
sdist="$CACHE/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"
if [[ ! -f "$sdist" ]]; then
  "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d "$CACHE"
fi

# 1. the Python wheel
if ! ls "$CACHE"/wheels/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} (a few minutes)..."
  # The compiler's warnings run to thousands of lines: keep them in a log, show its tail on failure.
  if ! CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
      "$PY" -m pip wheel --no-deps "$sdist" -w "$CACHE/wheels" >"$CACHE/wheel-build.log" 2>&1; then
    tail -n 60 "$CACHE/wheel-build.log" >&2
    exit 1
  fi
fi

# 2. llama-server from the same vendored tree
server="$CACHE/bin/llama-server"
if [[ ! -x "$server" ]]; then
  echo "building llama-server from the vendored llama.cpp (a few minutes)..."
  src="$CACHE/src"
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$sdist" -C "$src" --strip-components=1
  # shellcheck disable=SC2086
  cmake -S "$src/vendor/llama.cpp" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
    $CMAKE_FLAGS -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$src/build" --target llama-server -j "$JOBS" >/dev/null
  mkdir -p "$CACHE/bin"
  cp "$src/build/bin/llama-server" "$server"
  rm -rf "$src"
fi

echo "llama-cpp-python wheel: $(ls "$CACHE"/wheels/llama_cpp_python-*.whl)"
echo "llama-server: $server"
