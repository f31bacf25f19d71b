#!/usr/bin/env python3
"""The CUDA toolkit parts the CUDA backend builds with, from NVIDIA's wheels.

NVIDIA publishes the toolkit's pieces (nvcc, the runtime, cuBLAS, ...) as
wheels on the package index. This fetches the pinned ones with pip into the
cache that scripts/fetch_llama_cpp.py uses, unpacks them, and prints (last
line of stdout) the folder CMake wants:

    cuda_toolkit.py                 # cuBLAS alone, for a toolkit without it
                                    # -> -DLLMODEL_CUBLAS_ROOT=<printed folder>
    cuda_toolkit.py --full          # a whole toolkit (nvcc, runtime, cuBLAS)
                                    # -> -DCUDAToolkit_ROOT=<printed folder>
                                    #    -DCMAKE_CUDA_COMPILER=<folder>/bin/nvcc

pip checks each wheel against the index's hashes. A folder already unpacked
is left alone, so a second run needs no network. The driver (libcuda) is the
user's: CMake links against a stub it makes itself (cmake/llmodel_cuda.cmake).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_llama_cpp import cache_root, pip_command  # noqa: E402

CUDA_VERSION = "13.0"
# One CUDA release, every piece pinned: nvcc must match the headers it
# compiles against, and the wheels the package's [cuda] extra brings must be
# at least this runtime (the driver API version the module was built for).
CUBLAS = ("nvidia-cublas==13.0.2.14",)
COMPILER = ("nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-crt==13.0.88", "nvidia-nvvm==13.0.88",
            "nvidia-cuda-cccl==13.0.85", "nvidia-cuda-runtime==13.0.96")
MARKER = ".gpt4all-toolkit-complete"


def fetch(requirements: tuple, dest: Path) -> Path:
    """Downloads and unpacks the wheels into dest; returns the nvidia/cuXX folder in it."""
    if (dest / MARKER).exists():
        return next(dest.glob("nvidia/cu*"))
    tmp = Path(tempfile.mkdtemp(prefix="gpt4all-cuda-"))
    try:
        subprocess.run([*pip_command(), "download", "--no-deps", "--only-binary=:all:", "-d", str(tmp / "wheels"),
                        *requirements], check=True, stdout=sys.stderr)
        staging = tmp / "tree"
        for wheel in sorted((tmp / "wheels").glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if not name.startswith("nvidia/") or ".." in Path(name).parts or info.is_dir():
                        continue  # only the toolkit's files, none outside the folder
                    target = staging / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        os.chmod(target, mode)
        root = next(staging.glob("nvidia/cu*"))
        complete_layout(root)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(dest))
        (dest / MARKER).write_text(" ".join(requirements) + "\n")
        return next(dest.glob("nvidia/cu*"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def complete_layout(root: Path) -> None:
    """What a toolkit install has and the wheels lack: unversioned library
    names for the linker (libcudart.so -> libcudart.so.13) and lib64/."""
    lib = root / "lib"
    if sys.platform != "win32" and lib.is_dir():
        for path in sorted(lib.glob("lib*.so.*")):
            plain = lib / (path.name.split(".so.")[0] + ".so")
            if not plain.exists():
                plain.symlink_to(path.name)
        if not (root / "lib64").exists():
            (root / "lib64").symlink_to("lib")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--full", action="store_true", help="a whole toolkit: nvcc, the runtime and cuBLAS")
    ap.add_argument("--dest", type=Path, help="where to unpack (default: the build cache)")
    a = ap.parse_args()
    requirements = (COMPILER + CUBLAS) if a.full else CUBLAS
    dest = a.dest or cache_root() / f"cuda-{CUDA_VERSION}-{'toolkit' if a.full else 'cublas'}"
    root = fetch(requirements, dest)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
