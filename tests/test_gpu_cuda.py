"""The CUDA backend on a real NVIDIA GPU: the checks every GPU backend must
pass (tests/gpu_checks.py), and the CUDA runtime found in NVIDIA's wheels
(``gpt4all[cuda]``) both ways the package looks for it.

Runs where ``GPT4ALL_CUDA_LIBRARY`` names a library folder built with
``-DLLMODEL_CUDA=ON`` on a machine with an NVIDIA driver and GPU
(scripts/gpu_device_check.sh sets it up); conftest.py leaves this file out
of collection elsewhere, since CI machines have no GPU. What is checked
without one (the build, a silent load without a driver) is in
scripts/cuda_build_check.sh.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gpu_checks import (PROMPTS, agreeing_prefix, check_agreement, check_embeddings, check_ngl, check_words,
                        cosine, run_checks)

AGREE = 6  # the same bound as on Vulkan; what was measured is printed and in the README


def cuda_env() -> dict:
    lib = os.environ.get("GPT4ALL_CUDA_LIBRARY")
    assert lib, "set GPT4ALL_CUDA_LIBRARY to a library folder built with -DLLMODEL_CUDA=ON"
    return dict(os.environ, GPT4ALL_LIBRARY=lib)


@pytest.fixture(scope="module")
def cuda(smollm2_path, minilm_path):
    out, stderr = run_checks(smollm2_path, minilm_path, "cuda", ["gpu", "cuda", "nvidia", "CUDA:NAME"], cuda_env())
    # the figures the README quotes
    summary = {"gpus": out["gpus"],
               "devices": [d for d in out["devices"] if d["is_gpu"]],
               "agreeing_tokens": {p: agreeing_prefix(out["cpu"][p], out["gpu"][p]) for p in PROMPTS},
               "agreeing_tokens_by_ngl": {k: agreeing_prefix(v["tokens"], out["cpu"][PROMPTS[0]])
                                          for k, v in out["ngl"].items()},
               "embedding_cosines": [cosine(a, b) for a, b in zip(out["emb_cpu"], out["emb_gpu"])]}
    print("CUDA-SUMMARY " + json.dumps(summary))
    return out, stderr


def test_the_gpu_is_listed_and_every_device_word_reaches_it(cuda):
    out, _ = cuda
    gpus = [d for d in out["devices"] if d["is_gpu"]]
    assert gpus and all(d["backend"] == "CUDA" for d in gpus), out["devices"]
    assert all(0 < d["memory_free"] <= d["memory_total"] for d in gpus), gpus
    assert out["gpus"][0].startswith("cuda:NVIDIA")
    name = out["gpus"][0].split(":", 1)[1]
    assert set(out["words"]) >= {"gpu", "cuda", "nvidia", "CUDA:" + name, out["gpus"][0], name}
    check_words(out, "cuda")


def test_ngl_offloads_that_many_layers(cuda):
    check_ngl(cuda[0], AGREE)
    assert all(v["backend"] == "cuda" for k, v in cuda[0]["ngl"].items() if k != "0")


def test_greedy_generation_agrees_with_the_cpu(cuda):
    check_agreement(cuda[0], AGREE)


def test_embeddings_run_on_cuda_and_agree(cuda):
    check_embeddings(cuda[0], "cuda", 0.9999)


def test_nothing_is_printed(cuda):
    assert cuda[1] == ""


def _cuda_module(lib_dir: Path) -> Path:
    (module,) = [p for p in lib_dir.iterdir() if p.name.startswith("libggml-cuda")]
    return module


def test_the_module_finds_nvidias_wheels_through_its_run_path(tmp_path):
    """The installed layout: site-packages/gpt4all/lib beside site-packages/nvidia (gpt4all[cuda]).
    The module is opened with no site-packages and no loader path, so only its run path can find cuBLAS."""
    wheels = os.environ.get("GPT4ALL_CUDA_WHEELS_SITE")
    assert wheels, "set GPT4ALL_CUDA_WHEELS_SITE to a site-packages folder holding nvidia-cublas 13 (nvidia/cu13)"
    site = tmp_path / "site-packages"
    (site / "gpt4all").mkdir(parents=True)
    shutil.copytree(os.environ["GPT4ALL_CUDA_LIBRARY"], site / "gpt4all" / "lib", symlinks=False)
    (site / "nvidia").symlink_to(Path(wheels) / "nvidia")
    module = _cuda_module(site / "gpt4all" / "lib")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    code = ("import ctypes, sys; ctypes.CDLL(sys.argv[1]); "
            "print([l.split()[-1] for l in open('/proc/self/maps') if 'libcublas.so' in l][0])")
    r = subprocess.run([sys.executable, "-S", "-c", code, str(module)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    # the cuBLAS mapped is the wheels' (a system toolkit on the loader's path would come after the run path)
    assert Path(r.stdout.strip()).resolve().is_relative_to((Path(wheels) / "nvidia").resolve()), r.stdout
