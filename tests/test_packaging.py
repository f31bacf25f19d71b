"""Packaging: the wheel, the sdist and an editable install each go into a fresh
virtual environment and generate text with the package's own library.

These build for real (the wheel reuses the compiler cache of the main build;
the sdist build is native-only to keep CI short), so they take minutes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the packaging checks are written for Linux")
SMOKE = ROOT / "scripts" / "wheel_smoke.py"
RUNTIME_DEPS = ["requests", "platformdirs", "tqdm", "jinja2"]


def clean_env(**extra: str) -> dict:
    """The environment without this checkout's library or sources on any path."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPT4ALL_LIBRARY", "PYTHONPATH")}
    env.update(extra)
    return env


def run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def smoke(python: Path, models: Path, cwd: Path) -> str:
    r = run([python, SMOKE], cwd=cwd, env=clean_env(GPT4ALL_MODEL_PATH=str(models)), timeout=300)
    assert r.stderr == "", r.stderr
    assert "generated: " in r.stdout and "Paris" in r.stdout
    return r.stdout


@pytest.fixture(scope="module")
def llama_tree() -> str:
    return run([sys.executable, ROOT / "scripts" / "fetch_llama_cpp.py"]).stdout.strip().splitlines()[-1]


def test_wheel_repaired_installs_without_a_compiler_and_generates(tmp_path, smollm2_path, llama_tree):
    dist = tmp_path / "dist"
    t0 = time.monotonic()
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT], cwd=ROOT, timeout=1800,
        env=clean_env(LLAMA_CPP_DIR=llama_tree, CCACHE_BASEDIR=str(ROOT), CCACHE_NOHASHDIR="1"))
    build_s = time.monotonic() - t0
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith("gpt4all-") and "-py3-none-linux_" in wheel.name

    # auditwheel finds what the libraries need from the system and names the real manylinux tag
    run([sys.executable, "-m", "auditwheel", "repair", "-w", tmp_path / "repaired", wheel], timeout=600)
    (repaired,) = (tmp_path / "repaired").glob("*.whl")
    assert "-py3-none-manylinux_" in repaired.name, repaired.name
    with zipfile.ZipFile(repaired) as zf:
        names = zf.namelist()
    for member in ("gpt4all/py.typed", "gpt4all/models.json", "gpt4all/chat.html", "gpt4all/lib/libllmodel.so",
                   "gpt4all/lib/libllama.so", "gpt4all/lib/libggml-base.so", "gpt4all/lib/libggml-cpu-x64.so",
                   "gpt4all/lib/libggml-cpu-haswell.so", "gpt4all/lib/LICENSE.llama.cpp"):
        assert member in names, member
    assert not [n for n in names if n.startswith("tests/") or "test_llmodel" in n]

    python = fresh_venv(tmp_path / "venv")
    t0 = time.monotonic()
    # no compiler may be involved: poison the usual variables
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--only-binary", ":all:", repaired],
        env=clean_env(CC="/bin/false", CXX="/bin/false"), timeout=600)
    install_s = time.monotonic() - t0
    out = smoke(python, smollm2_path.parent, tmp_path)
    print(f"\nwheel {repaired.name}: {repaired.stat().st_size / 1e6:.1f} MB, build {build_s:.0f} s, "
          f"install {install_s:.0f} s\n{out}")


def test_sdist_carries_llama_cpp_and_builds_offline(tmp_path, smollm2_path, llama_tree):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--sdist", "--outdir", dist, ROOT], cwd=ROOT, timeout=600,
        env=clean_env(LLAMA_CPP_DIR=llama_tree))
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for member in ("setup.py", "pyproject.toml", "CMakeLists.txt", "LICENSE", "backend/include/llmodel.h",
                   "python/gpt4all/models.json", "third_party/llama.cpp/include/llama.h",
                   "third_party/llama.cpp/ggml/CMakeLists.txt", "third_party/llama.cpp/LICENSE"):
        assert member in names, member
    assert not [n for n in names if n.startswith(("third_party/llama.cpp/models/", "build", ".venv"))]
    assert sdist.stat().st_size < 40e6, sdist.stat().st_size

    python = fresh_venv(tmp_path / "venv")
    # build requirements and runtime dependencies from the index; then the
    # sdist itself with the index and every proxy dead and an empty source
    # cache, so that only the bundled llama.cpp tree can serve
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "setuptools>=68", "wheel",
         "cmake>=3.21", "ninja", *RUNTIME_DEPS], timeout=600)
    dead = "http://127.0.0.1:9"
    t0 = time.monotonic()
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-build-isolation", "--no-index",
         "--no-deps", sdist], timeout=1800,
        env=clean_env(PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}", PIP_INDEX_URL=dead,
                      HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
                      GPT4ALL_DEV_CACHE=str(tmp_path / "empty-cache"), LLAMA_CPP_DIR="",
                      CMAKE_ARGS="-DLLMODEL_CPU_ALL_VARIANTS=OFF",  # native only: minutes, not ten
                      CCACHE_BASEDIR=tempfile.gettempdir(), CCACHE_NOHASHDIR="1"))
    install_s = time.monotonic() - t0
    assert not (tmp_path / "empty-cache").exists()
    out = smoke(python, smollm2_path.parent, tmp_path)
    print(f"\nsdist {sdist.name}: {sdist.stat().st_size / 1e6:.1f} MB, native-only install {install_s:.0f} s\n{out}")


def test_editable_install_uses_the_source_tree(tmp_path, smollm2_path, llama_tree):
    python = fresh_venv(tmp_path / "venv")
    lib_dir = ROOT / "python" / "gpt4all" / "lib"
    try:
        run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ROOT], cwd=tmp_path,
            timeout=1800, env=clean_env(LLAMA_CPP_DIR=llama_tree, CCACHE_BASEDIR=str(ROOT), CCACHE_NOHASHDIR="1"))
        r = run([python, "-c", "import gpt4all; print(gpt4all.__file__)"], cwd=tmp_path, env=clean_env())
        assert Path(r.stdout.strip()).resolve() == (ROOT / "python" / "gpt4all" / "__init__.py").resolve()
        assert (lib_dir / "libllmodel.so").is_file()
        smoke(python, smollm2_path.parent, tmp_path)
    finally:
        # the libraries an editable install put into the checkout must not
        # shadow later builds of it
        shutil.rmtree(lib_dir, ignore_errors=True)
        for info in (ROOT / "python").glob("*.egg-info"):
            shutil.rmtree(info, ignore_errors=True)
