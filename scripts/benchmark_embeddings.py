#!/usr/bin/env python3
"""Embedding throughput: Embed4All against llama.cpp's llama-embedding (same
tree, same GGUF f16 model, same threads and flags) and sentence-transformers
(same weights, same threads, its default batch size of 32), in one run,
alternating.

    python scripts/benchmark_embeddings.py [--threads 1,2] [--reps 3] [--n 1000] [--json out.json]

Needs the bench build (scripts/benchmark.py --build makes build-bench with
llama-embedding) and the converter's virtual environment with
sentence-transformers (scripts/embedding_reference.py adds it).

The sentences: --n texts of mixed length, made from tests/data's embedding
texts (1 to 12 of their sentences each, seeded). Each tool runs in a process
of its own; reported: sentences per second over the embedding alone and over
the whole process (start, load, embed), and the process's peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from embedding_reference import ST_REQUIREMENT  # noqa: E402
from fetch_models import MODELS, converter_python, ensure_model, extract_weights  # noqa: E402

BENCH_BIN = ROOT / "build-bench" / "bin"
CONTEXT = 512

OURS = """if True:
    import json, sys, time
    t0 = time.perf_counter()
    from gpt4all import Embed4All
    texts = open(sys.argv[1], encoding="utf-8").read().splitlines()
    e = Embed4All(sys.argv[2], model_path=sys.argv[3], allow_download=False, n_threads=int(sys.argv[4]))
    t1 = time.perf_counter()
    e.embed(texts, long_text_mode="truncate")
    t2 = time.perf_counter()
    print(json.dumps({"load_s": t1 - t0, "embed_s": t2 - t1}))
"""

SENTENCE_TRANSFORMERS = """if True:
    import json, sys, time
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    from sentence_transformers import SentenceTransformer
    texts = open(sys.argv[1], encoding="utf-8").read().splitlines()
    m = SentenceTransformer(sys.argv[2], device="cpu")
    m.max_seq_length = %d
    t1 = time.perf_counter()
    m.encode(texts, batch_size=32, normalize_embeddings=True)
    t2 = time.perf_counter()
    print(json.dumps({"load_s": t1 - t0, "embed_s": t2 - t1}))
""" % CONTEXT


def sentences(n: int) -> list:
    texts = json.loads((ROOT / "tests" / "data" / "embedding_texts.json").read_text(encoding="utf-8"))["texts"]
    pool = [s.strip() for t in texts for s in re.split(r"(?<=[.!?。！？])\s+", " ".join(t.split())) if s.strip()]
    rng = random.Random(1234)
    out = []
    for _ in range(n):
        k = rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 6, 12))  # mostly one sentence, some paragraphs
        start = rng.randrange(len(pool))
        out.append(" ".join(pool[start:start + k]))
    return out


def timed(cmd: list, env: dict) -> dict:
    """Runs cmd: its wall time, and the timings it printed as JSON (if any)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    lines = [line for line in p.stdout.splitlines() if line.startswith('{"load_s"')]
    result = json.loads(lines[-1]) if lines else {}
    result["wall_s"] = wall
    return result


def peak_rss(cmd: list, env: dict | None = None) -> float:
    """The peak RSS of one run of cmd, in MB (GNU time's %M)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True, check=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    model = ensure_model("minilm")
    llama_embedding = BENCH_BIN / "llama-embedding"
    if not llama_embedding.is_file():
        raise SystemExit(f"{llama_embedding} is missing: run scripts/benchmark.py --build")
    st_python = converter_python()
    subprocess.run([str(st_python), "-m", "pip", "install", "-q", "--disable-pip-version-check", ST_REQUIREMENT],
                   check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), GPT4ALL_LIBRARY=str(BENCH_BIN))

    with tempfile.TemporaryDirectory() as tmp:
        weights = extract_weights(MODELS["minilm"], Path(tmp))
        texts = sentences(args.n)
        text_file = Path(tmp) / "sentences.txt"
        text_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
        words = sum(len(t.split()) for t in texts)
        print(f"{len(texts)} sentences, {words / len(texts):.0f} words on average, "
              f"{max(len(t.split()) for t in texts)} at most", file=sys.stderr)

        def commands(t: int) -> dict:
            return {
                "gpt4all": [sys.executable, "-c", OURS, str(text_file), model.name, str(model.parent), str(t)],
                "llama-embedding": [str(llama_embedding), "-m", str(model), "-f", str(text_file), "-t", str(t),
                                    "-tb", str(t), "-c", str(CONTEXT), "-b", str(CONTEXT), "-ub", str(CONTEXT),
                                    "--pooling", "mean", "--embd-normalize", "2", "--embd-output-format", "array"],
                "sentence-transformers": [str(st_python), "-c", SENTENCE_TRANSFORMERS, str(text_file), str(weights),
                                          str(t)],
            }

        results: dict = {}
        for t in (int(x) for x in args.threads.split(",")):
            cmds = commands(t)
            runs: dict = {k: [] for k in cmds}
            for rep in range(args.reps):
                for name, cmd in cmds.items():  # alternating: drift hits all three alike
                    r = timed(cmd, env)
                    runs[name].append(r)
                    print(f"threads {t} rep {rep}: {name} {r}", file=sys.stderr)
            rss = {name: peak_rss(cmd, env) for name, cmd in cmds.items()}
            summary = {}
            for name, rs in runs.items():
                whole = statistics.median(len(texts) / r["wall_s"] for r in rs)
                embed = statistics.median(len(texts) / r["embed_s"] for r in rs) if "embed_s" in rs[0] else None
                summary[name] = {"sentences_per_s_whole": whole, "sentences_per_s_embed": embed,
                                 "peak_rss_mb": rss[name], "runs": rs}
            results[t] = summary

    print(f"\nsentences/s for {args.n} mixed sentences (median of {args.reps}); whole process: start, load, embed; "
          f"embed: the embedding call alone")
    print(f"{'threads':>7} {'tool':<22} {'whole':>8} {'embed':>8} {'peak MB':>8}")
    for t, summary in results.items():
        for name, s in summary.items():
            embed = f"{s['sentences_per_s_embed']:.1f}" if s["sentences_per_s_embed"] else "-"
            print(f"{t:>7} {name:<22} {s['sentences_per_s_whole']:>8.1f} {embed:>8} {s['peak_rss_mb']:>8.0f}")
        ours = summary["gpt4all"]
        print(f"{t:>7} gpt4all / llama-embedding (whole): "
              f"{ours['sentences_per_s_whole'] / summary['llama-embedding']['sentences_per_s_whole']:.2f}; "
              f"gpt4all / sentence-transformers (embed): "
              f"{ours['sentences_per_s_embed'] / summary['sentence-transformers']['sentences_per_s_embed']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
