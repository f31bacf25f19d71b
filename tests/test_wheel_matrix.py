"""The cibuildwheel matrix in pyproject.toml, read as data: the wheels cannot
be built here (no Docker, Windows or Mac), so what can be checked without
building is: every script it runs exists, the GPU modules' options and CUDA
architectures agree between platforms, and what the repair steps leave out
is exactly what the package finds at run time (gpt4all[cuda], the driver,
the Vulkan loader)."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from gpt4all import _cuda_runtime

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
CIBW = CONFIG["tool"]["cibuildwheel"]


def override(select: str) -> dict:
    (found,) = [o for o in CIBW["overrides"] if o["select"] == select]
    return found


def cmake_args(env: dict) -> dict:
    args = {}
    for word in shlex.split(env["CMAKE_ARGS"]):
        m = re.match(r"-D([A-Za-z_]+)=(.*)", word)
        if m:
            args[m.group(1)] = m.group(2)
    return args


def test_every_script_the_matrix_runs_exists():
    commands = [CIBW["linux"]["before-all"], CIBW["windows"]["before-all"], CIBW["test-command"]]
    named = re.findall(r"\{project\}/([\w./-]+)", " ".join(commands))
    assert len(named) >= 5, named
    for rel in named:
        assert (ROOT / rel).is_file(), rel


def test_gpu_modules_per_platform():
    linux_x86 = cmake_args(override("*-manylinux_x86_64")["environment"])
    aarch64 = cmake_args(CIBW["linux"]["environment"])
    windows = cmake_args(CIBW["windows"]["environment"])
    mac_arm = cmake_args(override("*-macosx_arm64")["environment"])
    assert linux_x86["LLMODEL_VULKAN"] == aarch64["LLMODEL_VULKAN"] == windows["LLMODEL_VULKAN"] == "ON"
    assert linux_x86["LLMODEL_CUDA"] == windows["LLMODEL_CUDA"] == "ON"
    assert "LLMODEL_CUDA" not in aarch64 and mac_arm["LLMODEL_METAL"] == "ON"
    # one choice of CUDA architectures, the one the README explains
    assert linux_x86["CMAKE_CUDA_ARCHITECTURES"] == windows["CMAKE_CUDA_ARCHITECTURES"]
    archs = linux_x86["CMAKE_CUDA_ARCHITECTURES"]
    assert archs in (ROOT / "README.md").read_text()
    # CUDA 13 has no code generation below Turing (7.5)
    assert all(int(re.match(r"\d+", a).group()) >= 75 for a in archs.split(";"))


def test_repair_leaves_out_exactly_what_the_user_brings():
    linux = override("*-manylinux_x86_64")["repair-wheel-command"]
    excluded = set(re.findall(r"--exclude (\S+)", linux))
    runtime = set(_cuda_runtime._LIBS["linux"][1])
    assert excluded == runtime | {"libcuda.so.1", "libvulkan.so.1"}
    windows = CIBW["windows"]["repair-wheel-command"]
    (listed,) = re.findall(r'--exclude "([^"]+)"', windows)
    assert set(listed.split(";")) == set(_cuda_runtime._LIBS["win32"][1]) | {"nvcuda.dll", "vulkan-1.dll"}


def test_the_cuda_extra_brings_the_runtime_the_module_was_built_for():
    extra = CONFIG["project"]["optional-dependencies"]["cuda"]
    assert {re.match(r"[\w-]+", r).group() for r in extra} == {"nvidia-cuda-runtime", "nvidia-cublas"}
    assert all(">=13" in r and "<14" in r for r in extra)
    sys.path.insert(0, str(ROOT / "scripts"))
    import cuda_toolkit

    assert cuda_toolkit.CUDA_VERSION.startswith("13.")
