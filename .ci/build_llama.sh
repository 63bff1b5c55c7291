#!/usr/bin/env bash
# Build llama.cpp twice from ONE pinned source archive (the llama-cpp-python sdist vendors the
# whole llama.cpp tree): the llama-cpp-python wheel (local stack, Python-side tests) and the
# `llama-server` binary (what the backend image runs, here without CUDA).
#
# Portability: the machines that build and the machines that run are not the same CPU (CI and
# development move between Intel with AMX and AMD Zen 4 without AVX-VNNI; Cloud Build's E2 hosts
# are not Cloud Run's L4 hosts). So the build is GGML_NATIVE=OFF with NO per-instruction switch:
# llama.cpp's non-native x86 baseline is AVX/AVX2/FMA/F16C (x86-64-v3, a Haswell). An AVX-VNNI or
# AVX-512 switch compiles instructions that some of these CPUs lack and die on with SIGILL;
# tests/backend/test_portability.py runs both builds under `qemu-x86_64 -cpu Haswell` to prove
# they do not.
#
# The cache is keyed by the version AND a hash of the flags: a build made with other flags (an
# older checkout of this script, say) is never reused. `current` points at the latest build and
# is what the tests and benches look up.
#
# Prints, as its last two lines, LLAMA_WHEEL=... and LLAMA_SERVER=... for `eval`.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
# The Dockerfile pins the same archive by the same checksum (runtime/backend/Dockerfile).
LLAMA_CPP_PYTHON_SHA256="${LLAMA_CPP_PYTHON_SHA256:-832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e}"
ROOT="${ORPHEUS_BUILD_CACHE:-$HOME/.cache/orpheus-build}"
PY="${PYTHON:-python}"
JOBS="${JOBS:-$(nproc)}"
# Both builds. LLAVA_BUILD=OFF: the multimodal library is not used and only adds compile time.
CMAKE_FLAGS="${LLAMA_CMAKE_FLAGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
# llama-server only: offline-safe (no web UI download, no HTTPS client; the pinned llama.cpp
# ignores the older LLAMA_CURL switch) and statically linked so the binary can be copied.
SERVER_FLAGS="-DCMAKE_BUILD_TYPE=Release -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF"

key="$(printf '%s\n%s\n' "$CMAKE_FLAGS" "$SERVER_FLAGS" | sha256sum | cut -c1-12)"
CACHE="$ROOT/llama-cpp-python-${LLAMA_CPP_PYTHON_VERSION}-${key}"
mkdir -p "$CACHE"
printf '%s\n%s\n' "$CMAKE_FLAGS" "$SERVER_FLAGS" >"$CACHE/flags.txt"

# The source archive does not depend on the flags: one copy per version.
sdist="$ROOT/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"
if [[ ! -f "$sdist" ]]; then
  tmp="$(mktemp -d)"
  "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d "$tmp"
  echo "${LLAMA_CPP_PYTHON_SHA256}  $tmp/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz" \
    | sha256sum -c --quiet -
  mv "$tmp/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz" "$sdist"
  rm -rf "$tmp"
fi

# 1. the Python wheel
if ! ls "$CACHE"/wheels/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} [$CMAKE_FLAGS] (a few minutes)..." >&2
  # The compiler's warnings run to thousands of lines: keep them in a log, show its tail on failure.
  if ! CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
      "$PY" -m pip wheel --no-deps "$sdist" -w "$CACHE/wheels.partial" >"$CACHE/wheel-build.log" 2>&1; then
    tail -n 60 "$CACHE/wheel-build.log" >&2
    exit 1
  fi
  mv "$CACHE/wheels.partial" "$CACHE/wheels"
fi

# 2. llama-server from the same vendored tree, with the same CPU flags
server="$CACHE/bin/llama-server"
if [[ ! -x "$server" ]]; then
  echo "building llama-server from the vendored llama.cpp [$CMAKE_FLAGS] (a few minutes)..." >&2
  src="$CACHE/src"
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$sdist" -C "$src" --strip-components=1
  # shellcheck disable=SC2086
  if ! { cmake -S "$src/vendor/llama.cpp" -B "$src/build" $CMAKE_FLAGS $SERVER_FLAGS \
        && cmake --build "$src/build" --target llama-server -j "$JOBS"; } >"$CACHE/server-build.log" 2>&1; then
    tail -n 60 "$CACHE/server-build.log" >&2
    exit 1
  fi
  mkdir -p "$CACHE/bin"
  cp "$src/build/bin/llama-server" "$server.partial"
  mv "$server.partial" "$server"
  rm -rf "$src"
fi

ln -sfn "$(basename "$CACHE")" "$ROOT/current"
echo "LLAMA_WHEEL=$(ls "$CACHE"/wheels/llama_cpp_python-*.whl)"
echo "LLAMA_SERVER=$server"
