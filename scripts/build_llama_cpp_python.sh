#!/usr/bin/env bash
# Build the llama-cpp-python binding (avionics' `llamacpp` extra, in-process llama.cpp) ONCE from
# the pinned sdist -- the same sdist scripts/build_llama_server.sh builds llama-server from -- cache
# the wheel, and install it into the project venv.
#
# Usage: scripts/build_llama_cpp_python.sh [--no-install]
#   --no-install   build (or reuse) the cached wheel only.
# The wheel is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/airframe/wheels/llama-cpp-python-<version>/
# and reused on later runs (delete that directory to rebuild). The last stdout line is the
# absolute path to the wheel.
# Env: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), LLAMA_BUILD_JOBS (default 2),
#      LLAMA_CPP_WHEEL_CACHE_DIR (override the cache directory),
#      LLAMA_CPP_WHEEL (an already built wheel to use instead of the cache),
#      LLAMA_CPP_PYTHON_TARGET (interpreter to install into; default: the project's .venv).
#
# CPU only and portable: no CUDA/Metal/Vulkan, no -march=native, no curl, no OpenMP; llama.cpp's
# tests, examples, tools, server and the multimodal (mtmd/llava) library are not built.
# Plain `uv sync` never builds this: the `llamacpp` extra belongs to jeeves-avionics and the
# workspace root does not request it.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
# sha256 of llama_cpp_python-0.3.36.tar.gz (as in uv.lock); checked for the pinned version only.
PINNED_VERSION="0.3.36"
PINNED_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
JOBS="${LLAMA_BUILD_JOBS:-2}"
CACHE_DIR="${LLAMA_CPP_WHEEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airframe/wheels/llama-cpp-python-${VERSION}}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
UV=(bash "$REPO/scripts/uv.sh")

INSTALL=1
for arg in "$@"; do
    case "$arg" in
        --no-install) INSTALL=0 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build_llama_cpp_python: unknown argument $arg" >&2; exit 2 ;;
    esac
done

die() { echo "build_llama_cpp_python: $*" >&2; exit 1; }

cached_wheel() {
    local found
    found="$(find "$CACHE_DIR" -maxdepth 1 -type f -name "llama_cpp_python-${VERSION}-*.whl" 2>/dev/null \
        | sort | head -n 1)"
    [[ -n "$found" ]] && echo "$found"
}

install_wheel() {
    local wheel="$1" target="${LLAMA_CPP_PYTHON_TARGET:-}"
    if [[ -z "$target" ]]; then
        if [[ ! -x "$REPO/.venv/bin/python" ]]; then
            echo "build_llama_cpp_python: creating the project venv (uv sync)" >&2
            (cd "$REPO" && "${UV[@]}" sync --frozen --all-extras --quiet) >&2 \
                || die "uv sync failed"
        fi
        target="$REPO/.venv/bin/python"
    fi
    echo "build_llama_cpp_python: installing $(basename "$wheel") into $target" >&2
    (cd "$REPO" && "${UV[@]}" pip install --quiet --python "$target" "$wheel") >&2 \
        || die "uv pip install $wheel failed"
}

WHEEL="${LLAMA_CPP_WHEEL:-}"
[[ -n "$WHEEL" && -f "$WHEEL" ]] || WHEEL="$(cached_wheel || true)"
if [[ -z "$WHEEL" ]]; then
    command -v cmake >/dev/null 2>&1 || die "cmake not found (install cmake >= 3.21)"
    command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 \
        || die "no C++ compiler found (install g++ or clang++)"
    command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 \
        || die "no C compiler found (install gcc or clang)"

    WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-cpp-python-build.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT

    SDIST="llama_cpp_python-${VERSION}.tar.gz"
    echo "build_llama_cpp_python: downloading llama-cpp-python==${VERSION} sdist" >&2
    # uv has no `pip download`; run pip inside an ephemeral uv environment.
    "${UV[@]}" run --no-project --with pip -- python -m pip download --quiet --no-deps \
        --no-binary :all: "llama-cpp-python==${VERSION}" -d "$WORK" >&2 \
        || die "could not download llama-cpp-python==${VERSION} sdist"
    [[ -f "$WORK/$SDIST" ]] || die "sdist $SDIST not found after download"
    if [[ "$VERSION" == "$PINNED_VERSION" ]] && command -v sha256sum >/dev/null 2>&1; then
        echo "${PINNED_SHA256}  $WORK/$SDIST" | sha256sum --check --status \
            || die "sha256 of $SDIST does not match the pinned one"
    fi

    # Read by scikit-build-core (the sdist's build backend).
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
-DGGML_OPENCL=OFF -DGGML_RPC=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF"
    export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
    command -v ninja >/dev/null 2>&1 && export CMAKE_GENERATOR=Ninja

    echo "build_llama_cpp_python: building the wheel with -j${JOBS} (CMAKE_ARGS=${CMAKE_ARGS})" >&2
    start=$(date +%s)
    "${UV[@]}" build --wheel --out-dir "$WORK/dist" "$WORK/$SDIST" >&2 \
        || die "building the llama-cpp-python wheel failed"
    end=$(date +%s)

    BUILT="$(find "$WORK/dist" -maxdepth 1 -type f -name '*.whl' | head -n 1)"
    [[ -n "$BUILT" ]] || die "no wheel found after the build"
    mkdir -p "$CACHE_DIR"
    # Atomic-ish install into the cache: copy to a temp name, then rename.
    cp -f "$BUILT" "$CACHE_DIR/.tmp.$$"
    mv -f "$CACHE_DIR/.tmp.$$" "$CACHE_DIR/$(basename "$BUILT")"
    WHEEL="$CACHE_DIR/$(basename "$BUILT")"
    echo "build_llama_cpp_python: built $(basename "$WHEEL") in $((end - start))s" >&2
else
    echo "build_llama_cpp_python: reusing cached $WHEEL" >&2
fi

if [[ "$INSTALL" == 1 ]]; then
    install_wheel "$WHEEL"
fi
echo "$WHEEL"
