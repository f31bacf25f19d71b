"""What every GPU backend must show, run in a child process on a library
built with that backend: the device words reach it, ``ngl`` offloads that
many layers, greedy generation agrees with the CPU's, embeddings agree, and
nothing is printed. Used by test_gpu_vulkan.py (lavapipe, in CI) and
test_gpu_cuda.py (on a machine with an NVIDIA GPU).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Water boils at"]
N_TOKENS = 24

CHECKS = r"""
import json, sys
from pathlib import Path
from gpt4all import GPT4All, Embed4All
from gpt4all._pyllmodel import list_devices

model, minilm, prompts, backend, words = (Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]),
                                          sys.argv[4], json.loads(sys.argv[5]))
n_tokens = int(sys.argv[6])
out = {"devices": [d.__dict__ for d in list_devices()], "gpus": GPT4All.list_gpus()}

def load(device, **kw):
    return GPT4All(model.name, model_path=model.parent, allow_download=False, device=device, **kw)

def greedy(m, p):
    toks = []
    m.model.generate(p, temp=0, n_predict=n_tokens, on_token=lambda t, s: toks.append(t) is None)
    return toks

cpu = load("cpu")
out["cpu"] = {p: greedy(cpu, p) for p in prompts}
cpu.close()

mine = [g for g in out["gpus"] if g.startswith(backend + ":")]
gpu_name = mine[0].split(":", 1)[1] if mine else None
# NAME in a word stands for the device's name; the listed string and the bare name are tried too
words = [w.replace("NAME", gpu_name) for w in words if gpu_name or "NAME" not in w]
words += mine + ([gpu_name] if gpu_name else [])
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
    m = load(backend, ngl=ngl)
    out["ngl"][ngl] = {"layers": m.model.info.n_gpu_layers, "backend": m.backend,
                       "tokens": greedy(m, prompts[0])}
    m.close()
texts = ["The quick brown fox", "Embeddings on a GPU", "Un texte en fran\u00e7ais"]
with Embed4All(minilm.name, model_path=minilm.parent, allow_download=False, device="cpu") as e:
    out["emb_cpu"] = e.embed(texts)
with Embed4All(minilm.name, model_path=minilm.parent, allow_download=False, device=backend) as e:
    out["emb_gpu"] = e.embed(texts)
    out["emb_backend"] = e.gpt4all.backend
print("RESULT" + json.dumps(out))
"""


def run_checks(model: Path, minilm: Path, backend: str, words: List[str], env: Dict[str, str],
               timeout: float = 900) -> Tuple[dict, str]:
    """Runs CHECKS in a fresh interpreter; words may hold NAME, replaced by the device's name."""
    r = subprocess.run([sys.executable, "-c", CHECKS, str(model), str(minilm), json.dumps(PROMPTS), backend,
                        json.dumps(words), str(N_TOKENS)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(line for line in r.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):]), r.stderr


def agreeing_prefix(a: List[int], b: List[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def cosine(a: List[float], b: List[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def check_words(out: dict, backend: str) -> None:
    mine = [g for g in out["gpus"] if g.startswith(backend + ":")]
    assert mine, f"no {backend} device listed: {out['gpus']}"
    name = mine[0].split(":", 1)[1]
    for word, got in out["words"].items():
        assert got["backend"] == backend and got["device"] == name, (word, got)
        assert got["layers"] >= got["n_layer"], (word, got)


def check_ngl(out: dict, agree: int) -> None:
    n_layer = out["words"]["gpu"]["n_layer"]
    assert out["ngl"]["0"]["layers"] == 0
    assert out["ngl"]["10"]["layers"] == 10
    assert out["ngl"]["100"]["layers"] >= n_layer
    for ngl, got in out["ngl"].items():
        assert agreeing_prefix(got["tokens"], out["cpu"][PROMPTS[0]]) >= agree, (ngl, got, out["cpu"][PROMPTS[0]])


def check_agreement(out: dict, agree: int) -> None:
    for p in PROMPTS:
        cpu, gpu = out["cpu"][p], out["gpu"][p]
        assert len(gpu) == len(cpu) == N_TOKENS
        assert agreeing_prefix(cpu, gpu) >= agree, (p, cpu, gpu)
    assert out["chat"].strip()


def check_embeddings(out: dict, backend: str, least_cosine: float) -> None:
    assert out["emb_backend"] == backend
    for a, b in zip(out["emb_cpu"], out["emb_gpu"]):
        assert cosine(a, b) > least_cosine, cosine(a, b)
