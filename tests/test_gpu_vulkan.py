"""The Vulkan backend, run for real on Mesa's software Vulkan driver
(lavapipe, a CPU behind the Vulkan API): device words, layer offload,
agreement with the CPU, embeddings, and silence where no GPU is chosen.

ggml's Vulkan backend skips CPU-type Vulkan devices unless
``GGML_VK_VISIBLE_DEVICES`` names them (a software driver is slower than the
CPU backend), so these checks run in child processes with it set, on the
library in ``GPT4ALL_VULKAN_LIBRARY`` (``scripts/test.sh`` builds it in
``build-vulkan/``); without it they fail, not skip.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

VISIBLE = {"GGML_VK_VISIBLE_DEVICES": "0"}


def vulkan_env(**extra: str) -> dict:
    lib = os.environ.get("GPT4ALL_VULKAN_LIBRARY")
    assert lib, "set GPT4ALL_VULKAN_LIBRARY to a library folder built with -DLLMODEL_VULKAN=ON (scripts/test.sh does)"
    return dict(os.environ, GPT4ALL_LIBRARY=lib, **extra)
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Water boils at"]
AGREE = 6  # greedy tokens that must equal the CPU's; measured here: 6 (a digit of a number, where two
#           candidates are nearly tied) to 24 (the same sums in another order round differently)

CHECKS = r"""
import json, sys
from pathlib import Path
from gpt4all import GPT4All, Embed4All
from gpt4all._pyllmodel import list_devices

model, minilm, prompts = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
out = {"devices": [d.__dict__ for d in list_devices()], "gpus": GPT4All.list_gpus()}

def load(device, **kw):
    return GPT4All(model.name, model_path=model.parent, allow_download=False, device=device, **kw)

cpu = load("cpu")
def greedy(m, p):
    toks = []
    m.model.generate(p, temp=0, n_predict=24, on_token=lambda t, s: toks.append(t) is None)
    return toks
out["cpu"] = {p: greedy(cpu, p) for p in prompts}
cpu.close()

gpu_name = out["gpus"][0].split(":", 1)[1] if out["gpus"] else None
words = ["gpu", "vulkan", "kompute"] + out["gpus"] + ([gpu_name, "KOMPUTE:" + gpu_name] if gpu_name else [])
out["words"] = {}
for w in words:
    m = load(w, ngl=100)
    out["words"][w] = {"backend": m.backend, "device": m.device, "layers": m.model.info.n_gpu_layers,
                       "n_layer": m.model.info.n_layer}
    if w == "gpu":
        out["gpu"] = {p: greedy(m, p) for p in prompts}
        with m.chat_session():
            out["chat"] = m.generate("Name a color.", max_tokens=16, temp=0)
    m.close()
out["ngl"] = {}
for ngl in (0, 10, 100):
    m = load("vulkan", ngl=ngl)
    out["ngl"][ngl] = {"layers": m.model.info.n_gpu_layers, "tokens": greedy(m, prompts[0])}
    m.close()
texts = ["The quick brown fox", "Embeddings on a GPU", "Un texte en français"]
with Embed4All(minilm.name, model_path=minilm.parent, allow_download=False, device="cpu") as e:
    out["emb_cpu"] = e.embed(texts)
with Embed4All(minilm.name, model_path=minilm.parent, allow_download=False, device="vulkan") as e:
    out["emb_gpu"] = e.embed(texts)
    out["emb_backend"] = e.gpt4all.backend
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def vulkan(smollm2_path, minilm_path):
    r = subprocess.run([sys.executable, "-c", CHECKS, str(smollm2_path), str(minilm_path), json.dumps(PROMPTS)],
                       capture_output=True, text=True, timeout=900, env=vulkan_env(**VISIBLE))
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(line for line in r.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):]), r.stderr


def test_lavapipe_is_listed_and_every_device_word_reaches_it(vulkan):
    out, _ = vulkan
    assert [d["backend"] for d in out["devices"] if d["is_gpu"]] == ["Vulkan"], (
        "this library has no working Vulkan backend: build with -DLLMODEL_VULKAN=ON and install "
        "mesa-vulkan-drivers (scripts/test.sh does both)")
    (gpu,) = out["gpus"]
    assert gpu.startswith("vulkan:llvmpipe")
    name = gpu.split(":", 1)[1]
    for word, got in out["words"].items():
        assert got["backend"] == "vulkan" and got["device"] == name, (word, got)
        assert got["layers"] == got["n_layer"] + 1 or got["layers"] >= got["n_layer"], (word, got)


def test_ngl_offloads_that_many_layers(vulkan):
    out, _ = vulkan
    n_layer = out["words"]["gpu"]["n_layer"]
    assert out["ngl"]["0"]["layers"] == 0
    assert out["ngl"]["10"]["layers"] == 10
    assert out["ngl"]["100"]["layers"] >= n_layer
    for ngl, got in out["ngl"].items():
        assert got["tokens"][:AGREE] == out["cpu"][PROMPTS[0]][:AGREE], ngl


def test_greedy_generation_agrees_with_the_cpu(vulkan):
    out, _ = vulkan
    for p in PROMPTS:
        cpu, gpu = out["cpu"][p], out["gpu"][p]
        assert len(gpu) == len(cpu) == 24
        assert gpu[:AGREE] == cpu[:AGREE], (p, cpu, gpu)
    assert out["chat"].strip()


def test_embeddings_run_on_vulkan_and_agree(vulkan):
    out, _ = vulkan
    assert out["emb_backend"] == "vulkan"
    for a, b in zip(out["emb_cpu"], out["emb_gpu"]):
        cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
        assert cos > 0.9999, cos


def test_nothing_is_printed(vulkan):
    _, stderr = vulkan
    assert stderr == ""


def test_without_a_usable_gpu_the_module_stays_silent(smollm2_path):
    # lavapipe is a CPU: without GGML_VK_VISIBLE_DEVICES ggml skips it, as on a machine without a GPU
    code = (f"from gpt4all import GPT4All\n"
            f"m = GPT4All({smollm2_path.name!r}, model_path={str(smollm2_path.parent)!r}, allow_download=False)\n"
            f"print(GPT4All.list_gpus(), m.backend, repr(m.generate('Hi', max_tokens=3, temp=0)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=vulkan_env())
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("[] cpu ")
