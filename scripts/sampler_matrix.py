#!/usr/bin/env python3
"""Are a library's sampled tokens the same as another's? (the sampler's bit-identity check)

    PYTHONPATH=OLD/python GPT4ALL_LIBRARY=OLD/build/bin python scripts/sampler_matrix.py run old.json
    PYTHONPATH=python GPT4ALL_LIBRARY=build/bin python scripts/sampler_matrix.py run new.json
    python scripts/sampler_matrix.py compare old.json new.json

`run` generates 48 tokens from each of 3 prompts on a fresh cache for each
of 60 sampling settings (every greedy combination of the repeat penalty and
its window, and for temp 0.3/0.7/1.2 a covering of every pair of values of
temp, seed, top_k, top_p, min_p, repeat_penalty and repeat_last_n, each pair
at least twice), with the package and library the environment selects (an
older checkout's package works too), and writes their token ids. `compare`
says how many settings give identical tokens and where the others part.
Run both sides on the same machine: other CPUs round differently.
"""
import argparse
import collections
import itertools
import json
import os
import random
import sys

MODEL = os.path.expanduser("~/.cache/gpt4all-dev/models/SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]
N_PREDICT = 48

TEMPS = [0.0, 0.3, 0.7, 1.2]
SEEDS = [1, 42, 12345]
TOP_KS = [0, 1, 40]
TOP_PS = [0.4, 0.95, 1.0]
MIN_PS = [0.0, 0.05]
REPEAT_PENALTIES = [1.0, 1.18]
REPEAT_LAST_NS = [64, -1]
KEYS = ["temp", "seed", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n"]


def cells():
    """About 60 cells, deterministic: every temp=0 combination of
    repeat_penalty x repeat_last_n, twice (with two different settings of the
    other, greedy-irrelevant, parameters); then, for temp in {0.3, 0.7, 1.2},
    a greedy all-pairs covering of the seven parameters, extended greedily
    towards covering every pair 2, 3, ... times, up to 60 cells in all."""
    out = []
    others = [dict(seed=1, top_k=40, top_p=0.4, min_p=0.0), dict(seed=12345, top_k=0, top_p=1.0, min_p=0.05)]
    for rp, rln in itertools.product(REPEAT_PENALTIES, REPEAT_LAST_NS):
        for o in others:
            out.append(dict(temp=0.0, repeat_penalty=rp, repeat_last_n=rln, **o))
    values = [TEMPS[1:], SEEDS, TOP_KS, TOP_PS, MIN_PS, REPEAT_PENALTIES, REPEAT_LAST_NS]
    full = list(itertools.product(*values))
    random.Random(0).shuffle(full)
    pairs = {}
    for i, j in itertools.combinations(range(len(KEYS)), 2):
        for a in values[i]:
            for b in values[j]:
                pairs[(i, a, j, b)] = 0

    def gain(c, need):
        return sum(1 for i, j in itertools.combinations(range(len(KEYS)), 2) if pairs[(i, c[i], j, c[j])] < need)

    chosen = []
    for need in range(1, 20):
        while len(out) + len(chosen) < 60:
            best = max((c for c in full if c not in chosen), key=lambda c: gain(c, need))
            if gain(best, need) == 0:
                break
            chosen.append(best)
            for i, j in itertools.combinations(range(len(KEYS)), 2):
                pairs[(i, best[i], j, best[j])] += 1
    for c in chosen:
        out.append(dict(zip(KEYS, c)))
    return out


def cell_name(c):
    return ",".join(f"{k}={c[k]}" for k in KEYS)


def run(out: str) -> None:
    from gpt4all._pyllmodel import LLModel

    result = {}
    with LLModel(MODEL, n_ctx=1024, n_threads=2) as m:
        for c in cells():
            per_prompt = []
            for prompt in PROMPTS:
                toks: list = []
                m.reset()
                m.generate(prompt, on_token=lambda t, s: toks.append(t) or True,
                           n_predict=N_PREDICT, temp=c["temp"], top_k=c["top_k"], top_p=c["top_p"], min_p=c["min_p"],
                           repeat_penalty=c["repeat_penalty"], repeat_last_n=c["repeat_last_n"], seed=c["seed"],
                           n_batch=0, context_shift=False, n_keep=0, special=False, add_special=True)
                per_prompt.append(toks)
            result[cell_name(c)] = per_prompt
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def compare(path_a: str, path_b: str) -> int:
    with open(path_a) as fa, open(path_b) as fb:
        a, b = json.load(fa), json.load(fb)
    if list(a) != list(b):
        sys.exit("the two files hold different settings")
    total, same = collections.Counter(), collections.Counter()
    for cell in a:
        temp = cell.split(",")[0]
        total[temp] += 1
        if a[cell] == b[cell]:
            same[temp] += 1
            continue
        for i, (x, y) in enumerate(zip(a[cell], b[cell])):
            if x != y:
                pos = next((k for k, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
                print(f"differs: {cell}, prompt {i}, from token {pos}")
    print(f"identical: {sum(same.values())} of {sum(total.values())} settings")
    for t in total:
        print(f"  {t}: {same[t]} of {total[t]}")
    return 0 if same == total else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("out")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    args = ap.parse_args()
    if args.command == "run":
        run(args.out)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
