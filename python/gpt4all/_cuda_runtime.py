"""Finds the CUDA runtime and cuBLAS that ``pip install gpt4all[cuda]`` brings.

The CUDA backend (``libggml-cuda``) needs NVIDIA's runtime and cuBLAS, which
the wheel does not bundle: they come from NVIDIA's own wheels. In the usual
layout (both in one site-packages) the module's run path finds them by
itself; this covers the rest (a user site, another environment on
``sys.path``, a library folder named by ``GPT4ALL_LIBRARY``) by opening them
before the backend loads, so that the loader sees them already in memory.

Nothing happens unless a CUDA module is beside the library and an NVIDIA
driver is installed: a machine without one never touches these files.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, List

log = logging.getLogger("gpt4all")

# what libggml-cuda was linked against (CUDA 13), in dependency order
_LIBS = {"linux": ("lib", ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13")),
         "win32": ("bin/x86_64", ("cudart64_13.dll", "cublasLt64_13.dll", "cublas64_13.dll"))}
_kept: List[object] = []  # opened libraries stay open for the life of the process


def _has_cuda_module(lib_dir: Path) -> bool:
    try:
        return any(p.name.startswith(("libggml-cuda", "ggml-cuda")) for p in lib_dir.iterdir())
    except OSError:
        return False


def _driver_present() -> bool:
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def _nvidia_dirs() -> Iterator[Path]:
    """Every nvidia/ package folder on sys.path (a namespace package may span several)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return
    for location in (spec.submodule_search_locations or []) if spec else []:
        yield Path(location)


def preload(lib_dir: Path) -> None:
    """Makes NVIDIA's wheels' CUDA libraries loadable by the CUDA module in lib_dir."""
    if sys.platform == "darwin" or not _has_cuda_module(lib_dir) or not _driver_present():
        return
    folder, names = _LIBS.get(sys.platform, _LIBS["linux"])
    for base in _nvidia_dirs():
        lib = base / "cu13" / folder
        if not all((lib / name).is_file() for name in names):
            continue
        try:
            if sys.platform == "win32":
                _kept.append(os.add_dll_directory(str(lib)))
            # opened by full path: the module's own lookup by name then finds
            # them in memory (on Windows too, where ggml loads with LoadLibraryW)
            for name in names:
                _kept.append(ctypes.CDLL(str(lib / name)))
        except OSError as e:  # a broken install: the module is skipped, as without it
            log.debug("gpt4all: could not open the CUDA runtime in %s: %s", lib, e)
            continue
        log.debug("gpt4all: CUDA runtime and cuBLAS from %s", lib)
        return
