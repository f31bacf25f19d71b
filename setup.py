"""Builds the native backend with CMake and puts its libraries into the package.

`pip install .` configures and builds into ./build-wheel (or $GPT4ALL_BUILD_DIR),
then copies every runtime library from build/bin into gpt4all/lib, where the
loader looks. Extra CMake options go in $CMAKE_ARGS (e.g. -DLLMODEL_VULKAN=ON).
"""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    bdist_wheel = None

ROOT = Path(__file__).resolve().parent
LIB_SUFFIXES = (".so", ".dylib", ".dll")


def build_native() -> Path:
    build_dir = Path(os.environ.get("GPT4ALL_BUILD_DIR", ROOT / "build-wheel"))
    cmake_args = ["-DLLMODEL_BUILD_TESTS=OFF"] + shlex.split(os.environ.get("CMAKE_ARGS", ""))
    if not (ROOT / "third_party" / "llama.cpp" / "include" / "llama.h").exists() and "LLAMA_CPP_DIR" not in os.environ:
        tree = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_llama_cpp.py")], check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
        cmake_args.append(f"-DLLAMA_CPP_DIR={tree}")
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists() else []
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *generator,
                    *cmake_args], check=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "--target", "llmodel", "-j", jobs],
                   check=True)
    # the CPU variants and GPU backends are modules nothing links to: build all
    subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", jobs], check=True)
    return build_dir / "bin"


class BuildPyWithNative(build_py):
    def run(self) -> None:
        super().run()
        lib_dir = Path(self.build_lib) / "gpt4all" / "lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        for path in build_native().iterdir():
            if path.is_file() and any(s in path.name for s in LIB_SUFFIXES):
                shutil.copy2(path, lib_dir / path.name, follow_symlinks=True)


cmdclass = {"build_py": BuildPyWithNative}
if bdist_wheel is not None:
    class PlatformWheel(bdist_wheel):
        """One wheel per platform serves every Python 3: ctypes, no extension module."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass)
