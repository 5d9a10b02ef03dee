#!/usr/bin/env bash
# Build llama-server from the llama.cpp sources vendored in the pinned llama-cpp-python sdist.
#
# Usage: scripts/build_llama_server.sh
# The binary is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/airframe/llama-server-<version>/
# and reused on later runs. The last stdout line is the absolute path to the binary.
# Env: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), LLAMA_BUILD_JOBS (default 2),
#      LLAMA_SERVER_CACHE_DIR (override the cache directory).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${LLAMA_BUILD_JOBS:-2}"
CACHE_DIR="${LLAMA_SERVER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airframe/llama-server-${VERSION}}"
BIN="${CACHE_DIR}/llama-server"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

die() { echo "build_llama_server: $*" >&2; exit 1; }

command -v cmake >/dev/null 2>&1 || die "cmake not found (install cmake >= 3.14)"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 \
    || die "no C++ compiler found (install g++ or clang++)"
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 \
    || die "no C compiler found (install gcc or clang)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

SDIST="llama_cpp_python-${VERSION}.tar.gz"
echo "build_llama_server: downloading llama-cpp-python==${VERSION} sdist" >&2
if command -v uv >/dev/null 2>&1; then
    # uv has no `pip download`; run pip inside an ephemeral uv environment.
    uv run --no-project --with pip -- python -m pip download --quiet --no-deps \
        --no-binary :all: "llama-cpp-python==${VERSION}" -d "$WORK" >&2 \
        || die "could not download llama-cpp-python==${VERSION} sdist"
elif command -v pip >/dev/null 2>&1; then
    pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==${VERSION}" -d "$WORK" >&2 \
        || die "could not download llama-cpp-python==${VERSION} sdist"
else
    die "neither uv nor pip found to download the llama-cpp-python sdist"
fi
[[ -f "$WORK/$SDIST" ]] || die "sdist $SDIST not found after download"

tar -xzf "$WORK/$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_python-${VERSION}/vendor/llama.cpp"
[[ -f "$SRC/CMakeLists.txt" ]] || die "vendored llama.cpp not found in sdist"
[[ -d "$SRC/tools/server" ]] || die "vendored llama.cpp has no tools/server"

GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

echo "build_llama_server: configuring" >&2
start=$(date +%s)
cmake -S "$SRC" -B "$WORK/build" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DGGML_NATIVE=OFF \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
    -DGGML_OPENMP=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON >&2 || die "cmake configure failed"

echo "build_llama_server: building llama-server with -j${JOBS}" >&2
cmake --build "$WORK/build" --config Release --target llama-server -j "$JOBS" >&2 \
    || die "cmake build of llama-server failed"
end=$(date +%s)

BUILT="$(find "$WORK/build" -type f -name llama-server -perm -u+x | head -n 1)"
[[ -n "$BUILT" ]] || die "llama-server binary not found in build tree"

mkdir -p "$CACHE_DIR"
# Copy any shared libraries from the build tree too (none expected with BUILD_SHARED_LIBS=OFF).
find "$WORK/build" -type f \( -name '*.so' -o -name '*.so.*' -o -name '*.dylib' \) \
    -exec cp -f {} "$CACHE_DIR/" \; 2>/dev/null || true
# Atomic-ish install: copy to a temp name, then rename.
cp -f "$BUILT" "$CACHE_DIR/.llama-server.tmp.$$"
chmod +x "$CACHE_DIR/.llama-server.tmp.$$"
mv -f "$CACHE_DIR/.llama-server.tmp.$$" "$BIN"
echo "build_llama_server: built in $((end - start))s" >&2
echo "$BIN"
