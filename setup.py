"""Builds the native backend with CMake and puts its libraries into the package.

`pip install .` configures and builds into ./build-wheel (or $GPT4ALL_BUILD_DIR),
then copies every runtime library from build/bin into gpt4all/lib, where the
loader looks. Extra CMake options go in $CMAKE_ARGS (e.g. -DLLMODEL_VULKAN=ON).

`python -m build --sdist` copies the parts of the llama.cpp tree the build
needs into third_party/llama.cpp (ignored by git) and ships them, so the
sdist builds without fetching anything but its build requirements.
"""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    bdist_wheel = None

ROOT = Path(__file__).resolve().parent
LIB_SUFFIXES = (".so", ".dylib", ".dll")
BUNDLED_TREE = ROOT / "third_party" / "llama.cpp"
# what of llama.cpp the build reads (and llama-bench, for the benchmark)
TREE_PARTS = ("CMakeLists.txt", "LICENSE", "licenses", "cmake", "include", "src", "ggml", "common", "vendor",
              "tools/llama-bench")


def llama_cpp_tree() -> Path:
    """The llama.cpp tree to build: $LLAMA_CPP_DIR, the bundled one, or the pinned one fetched into a cache."""
    if os.environ.get("LLAMA_CPP_DIR"):
        return Path(os.environ["LLAMA_CPP_DIR"])
    if (BUNDLED_TREE / "include" / "llama.h").exists():
        return BUNDLED_TREE
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_llama_cpp.py")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def build_native(tree: Path) -> Path:
    """Builds with CMake against the llama.cpp tree; returns the folder of the libraries."""
    build_dir = Path(os.environ.get("GPT4ALL_BUILD_DIR", ROOT / "build-wheel"))
    cmake_args = ["-DLLMODEL_BUILD_TESTS=OFF", f"-DLLAMA_CPP_DIR={tree}"]
    cmake_args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
    # Ninja where it needs no setup; on Windows CMake's default (Visual Studio) finds MSVC by itself
    cache = build_dir / "CMakeCache.txt"
    ninja = shutil.which("ninja")
    generator = []
    if not cache.exists():
        if ninja and sys.platform != "win32":
            generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    elif ninja and "CMAKE_GENERATOR:INTERNAL=Ninja" in cache.read_text(errors="replace"):
        # each isolated build environment has its own ninja: the cached one may be gone
        generator = [f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *generator,
                    *cmake_args], check=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "--target", "llmodel", "-j", jobs],
                   check=True)
    # the CPU variants and GPU backends are modules nothing links to: build all
    subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", jobs], check=True)
    # multi-config generators (Visual Studio, Xcode) add the configuration's name
    for candidate in (build_dir / "bin" / "Release", build_dir / "bin"):
        if any(candidate.glob("*llmodel*")):
            return candidate
    raise RuntimeError(f"the build produced no llmodel library under {build_dir / 'bin'}")


class BuildPyWithNative(build_py):
    def run(self) -> None:
        super().run()
        # an editable install imports the package from the source tree: the
        # libraries go there (git ignores them)
        editable = getattr(self, "editable_mode", False)
        package = ROOT / "python" / "gpt4all" if editable else Path(self.build_lib) / "gpt4all"
        lib_dir = package / "lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        tree = llama_cpp_tree()
        for path in build_native(tree).iterdir():
            if path.is_file() and any(s in path.name for s in LIB_SUFFIXES):
                shutil.copy2(path, lib_dir / path.name, follow_symlinks=True)
        # the libraries are llama.cpp's too: its licence travels with them
        shutil.copy2(tree / "LICENSE", lib_dir / "LICENSE.llama.cpp")


class SdistWithLlamaCpp(sdist):
    """Puts the llama.cpp tree into the sdist, so that it builds offline."""

    def run(self) -> None:
        source = llama_cpp_tree()
        if source.resolve() != BUNDLED_TREE.resolve():
            shutil.rmtree(BUNDLED_TREE, ignore_errors=True)
            for part in TREE_PARTS:
                src, dst = source / part, BUNDLED_TREE / part
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
                else:
                    shutil.copy2(src, dst)
        super().run()


cmdclass = {"build_py": BuildPyWithNative, "sdist": SdistWithLlamaCpp}
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

class BinaryDistribution(Distribution):
    """The package carries native libraries: install it as platform-specific
    (platlib), though it has no extension module of its own."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass=cmdclass, distclass=BinaryDistribution)
