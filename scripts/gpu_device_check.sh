#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: the CUDA tests and the CUDA
# benchmark against llama-bench from the same build, in one go (a lent GPU's
# time is short). Needs a CUDA build's bin/ folder (llmodel, every CPU
# variant, libggml-cuda, llama-bench: scripts/cuda_build_check.sh makes one),
# the test models in the dev cache, and NVIDIA's cuBLAS 13 wheel installed in
# the Python that runs this (pip install gpt4all[cuda] brings it).
#
#   scripts/gpu_device_check.sh BUILD_BIN OUT_DIR [THREADS]
#
# Writes OUT_DIR/gpu.txt, pytest.log, cuda-summary.json, bench-cuda.json/.txt.
set -uo pipefail
lib=$(cd "$1" && pwd)
out=$2
threads=${3:-8}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=${PYTHON:-python3}
rc=0

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv | tee "$out/gpu.txt"
# where NVIDIA's wheels are: the Python's own site-packages
wheels=$("$py" -c "import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))") || {
    echo "no NVIDIA wheels (nvidia-cublas) in $py's site-packages" >&2; exit 2; }
echo "NVIDIA wheels in $wheels"

# 1. the tests: no LD_LIBRARY_PATH, so the package must find cuBLAS itself
GPT4ALL_CUDA_LIBRARY="$lib" GPT4ALL_CUDA_WHEELS_SITE="$wheels" \
    "$py" -m pytest -q -s -p no:cacheprovider tests/test_gpu_cuda.py 2>&1 | tee "$out/pytest.log"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
grep -h '^CUDA-SUMMARY ' "$out/pytest.log" | sed 's/^CUDA-SUMMARY //' > "$out/cuda-summary.json" || true

# 2. the benchmark: llama-bench loads the same libggml-cuda, which finds the
# wheels' cuBLAS through the loader path (its run path expects the package layout)
LD_LIBRARY_PATH="$wheels/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$py" scripts/benchmark.py --device cuda --threads "$threads" --reps "${REPS:-3}" \
    --library "$lib" --llama-bench "$lib/llama-bench" --json "$out/bench-cuda.json" 2>&1 | tee "$out/bench-cuda.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
exit $rc
