#!/usr/bin/env bash
# The CUDA backend, built and checked without a GPU: too slow for CI on two
# cores (see the README for its time), so it is a script of its own.
#
#   scripts/cuda_build_check.sh [BUILD_DIR]     (default build-cuda)
#   CUDA_ARCHS="90-real" scripts/cuda_build_check.sh    # one architecture, quicker
#   CHECK_ONLY=1 scripts/cuda_build_check.sh BUILD_DIR  # steps 2 and 3 on a build made before
#
# 1. builds llmodel with every CPU variant and libggml-cuda for the wheel's
#    architectures (CUDA_ARCHS overrides), plus llama-bench from the same tree
#    (scripts/gpu_device_check.sh compares against it on a GPU machine);
#    nvcc comes from the installed toolkit, else from NVIDIA's wheels, and
#    cuBLAS from NVIDIA's wheel when the toolkit lacks it (scripts/cuda_toolkit.py);
# 2. checks the module: it needs the driver, the runtime and cuBLAS by soname
#    (none bundled) and looks for NVIDIA's wheels beside the package;
# 3. where no NVIDIA driver is installed (as here): loading a model prints
#    nothing, lists no GPU, runs on the CPU, and says why at debug level.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${1:-build-cuda}
# The wheel's choice (README, "GPU backends"): machine code for the
# architectures most users run, Turing as PTX (pyproject.toml, the same list).
ARCHS=${CUDA_ARCHS:-"75-virtual;80-real;90-real;120a-real"}
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
start=$(date +%s)

if [ -z "${CHECK_ONLY:-}" ]; then
TREE=$("$PY" scripts/fetch_llama_cpp.py | tail -1)
args=(-DLLAMA_CPP_DIR="$TREE" -DLLMODEL_CUDA=ON -DLLMODEL_BUILD_LLAMA_BENCH=ON -DLLMODEL_BUILD_TESTS=OFF
      "-DCMAKE_CUDA_ARCHITECTURES=$ARCHS")
nvcc=$(command -v nvcc || true)
if [ -z "$nvcc" ]; then
    toolkit=$("$PY" scripts/cuda_toolkit.py --full | tail -1)
    nvcc=$toolkit/bin/nvcc
    args+=(-DCUDAToolkit_ROOT="$toolkit")
fi
args+=(-DCMAKE_CUDA_COMPILER="$nvcc")
toolkit_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
if ! ls "$toolkit_root"/include/cublas_v2.h "$toolkit_root"/targets/*/include/cublas_v2.h >/dev/null 2>&1; then
    args+=(-DLLMODEL_CUBLAS_ROOT="$("$PY" scripts/cuda_toolkit.py | tail -1)")
fi
if command -v ccache >/dev/null; then
    args+=(-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
gen=()
command -v ninja >/dev/null && [ ! -f "$BUILD/CMakeCache.txt" ] && gen=(-G Ninja)
cmake -S . -B "$BUILD" "${gen[@]}" "${args[@]}" >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target llmodel llama-bench
cmake --build "$BUILD" -j "$JOBS"  # the CPU variants: modules nothing links to
fi
built=$(date +%s)

BIN=$ROOT/$BUILD/bin
[ -d "$BIN" ] || BIN=$BUILD/bin
module=$BIN/libggml-cuda.so
what="for $ARCHS"; [ -n "${CHECK_ONLY:-}" ] && what="(built before)"
echo "== $module: $(du -h "$module" | cut -f1) $what"
needed=$(readelf -d "$module" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
runpath=$(readelf -d "$module" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
echo "needs: $needed"
echo "run path: $runpath"
for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13; do
    case " $needed " in *" $lib "*) ;; *) echo "FAIL: the module does not name $lib" >&2; exit 1 ;; esac
done
case "$runpath" in *'$ORIGIN/../../nvidia/cu13/lib'*) ;; *) echo "FAIL: no run path to NVIDIA's wheels" >&2; exit 1 ;; esac
if cuobjdump --list-elf "$module" >/dev/null 2>&1; then
    echo "machine code for: $(cuobjdump --list-elf "$module" | grep -o 'sm_[0-9a-z]*' | sort -u | tr '\n' ' ')"
fi

if "$PY" -c "import ctypes; ctypes.CDLL('libcuda.so.1')" 2>/dev/null; then
    echo "an NVIDIA driver is installed here: the no-driver check is for machines without one (skipped)"
else
    MODEL=$("$PY" scripts/fetch_models.py --print-path smollm2 | tail -1)
    GPT4ALL_LIBRARY=$BIN PYTHONPATH=$ROOT/python "$PY" - "$MODEL" <<'EOF'
import io, logging, os, sys
from pathlib import Path
from gpt4all import GPT4All

model = Path(sys.argv[1])
captured = io.StringIO()
handler = logging.StreamHandler(captured)
logging.getLogger("gpt4all").addHandler(handler)
logging.getLogger("gpt4all").setLevel(logging.DEBUG)
m = GPT4All(model.name, model_path=model.parent, allow_download=False)
text = m.generate("The capital of France is", max_tokens=4, temp=0)
assert GPT4All.list_gpus() == [], GPT4All.list_gpus()
assert m.backend == "cpu", m.backend
# the loader says which library it could not open (libcuda.so.1 or the wheels' cuBLAS)
assert "skipping libggml-cuda" in captured.getvalue(), captured.getvalue()
print(f"no driver: CPU used, no GPU listed, generated {text!r}; debug log says:")
print("  " + next(l for l in captured.getvalue().splitlines() if "libggml-cuda" in l))
EOF
    # and nothing at all on stderr without logging set up
    err=$(GPT4ALL_LIBRARY=$BIN PYTHONPATH=$ROOT/python "$PY" -c "
import sys; from pathlib import Path; from gpt4all import GPT4All
m = Path(sys.argv[1]); GPT4All(m.name, model_path=m.parent, allow_download=False).generate('Hi', max_tokens=2)
" "$MODEL" 2>&1 >/dev/null)
    [ -z "$err" ] || { echo "FAIL: printed on stderr: $err" >&2; exit 1; }
    echo "no driver: nothing printed"
fi
end=$(date +%s)
echo "== CUDA build check passed: build $((built - start)) s, checks $((end - built)) s on $JOBS jobs"
