#!/usr/bin/env python3
"""How fast is gpt4all from Python, next to llama.cpp's own llama-bench?

    python scripts/benchmark.py --build              # build llama-bench, then measure
    python scripts/benchmark.py --threads 1,2 --reps 5 --json bench.json

Both contenders use the same libllama/libggml files: llama-bench is built into
build-bench/ from the same llama.cpp tree with the same flags as the package
(-DLLMODEL_BUILD_LLAMA_BENCH=ON), and gpt4all is pointed at that folder. Each
repetition runs every contender once, in an order that rotates, so a noisy
neighbour hurts them alike. Every measurement runs in a fresh process, whose
peak RSS is read from the kernel.

Same CPU code too: in a build with every CPU variant, llmodel picks its
variant itself (skipping sapphirerapids, whose AMX kernels die with SIGILL),
while llama.cpp's tools would load the best-scoring one, sapphirerapids
included. So the tools run from a folder beside bin/ (bin-cpu-<variant>/,
hard links) that holds only the variant llmodel reports.

Measured, per thread count:
  pp  prompt processing, tokens/s: a prompt of --n-prompt tokens, from an
      empty cache, to the first generated token (gpt4all at its default
      n_batch=8, as LangChain passes it); llama-bench -p N -n 0.
  tg  generation, tokens/s: --n-gen tokens, greedy; llama-bench -p 0 -n N.
      Blocking: the whole call less the prompt's evaluation (as the engine
      timed it); streaming and callback: between the first and the last token.
Also: model load time, a 10-turn chat (latency and evaluated prompt tokens per
turn, which must stay flat), `import gpt4all` time, and peers (the original
gpt4all package, llama-cpp-python) when --peer names a Python that has them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
BENCH_BUILD = ROOT / "build-bench"
TG_PROMPT = "Count from one to one hundred, in words, separated by commas: one, two, three,"
CHAT_TURNS = [f"Tell me one short fact about the number {i}." for i in range(1, 11)]
MODES = ("blocking", "streaming", "callback")


def rotated(items, k: int) -> list:
    k %= len(items)
    return list(items[k:]) + list(items[:k])


# ---------------------------------------------------------------- workers
# Each runs in its own process and prints one JSON object on stdout.

def _prompt_of(tokenize, n: int) -> str:
    """Plain text that the model's tokenizer turns into about n tokens."""
    words = ("the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
             "boxing matches in a small village near the river ").split()
    text = ""
    i = 0
    while len(tokenize(text)) < n:
        text += words[i % len(words)] + " "
        i += 1
    return text.strip()


def worker_gpt4all(a: argparse.Namespace) -> Dict[str, Any]:
    """Our package, or the original one (same API) when run by its Python."""
    t0 = time.perf_counter()
    import gpt4all
    from gpt4all import GPT4All
    import_s = time.perf_counter() - t0

    model_file = Path(a.model)
    t0 = time.perf_counter()
    m = GPT4All(model_file.name, model_path=str(model_file.parent), allow_download=False, n_threads=a.threads,
                device="cpu", n_ctx=2048)
    load_s = time.perf_counter() - t0
    ours = hasattr(m, "last_generation")
    native = m.model

    def tokenize(text: str) -> List[int]:
        return native.tokenize(text) if ours else text.split()

    def reset() -> None:
        if ours:
            native.reset()  # else the original starts each plain generate afresh

    prompt = _prompt_of(tokenize, a.n_prompt)
    greedy = dict(temp=0.0, top_k=1)
    m.generate(prompt, max_tokens=4, **greedy)  # warm-up
    out: Dict[str, Any] = {"version": getattr(gpt4all, "__version__", "?"), "import_s": import_s, "load_s": load_s}

    # prompt processing: from the call to the first token
    pp: Dict[str, float] = {}
    for mode in rotated(MODES, a.rep):
        reset()
        first: List[float] = []

        def on_token(_tok: int, _text: str) -> bool:
            if not first:
                first.append(time.perf_counter())
            return True

        t0 = time.perf_counter()
        if mode == "blocking":
            m.generate(prompt, max_tokens=1, **greedy)
            first.append(time.perf_counter())
        elif mode == "streaming":
            it = iter(m.generate(prompt, max_tokens=1, streaming=True, **greedy))
            next(it)
            first.append(time.perf_counter())
            for _ in it:
                pass
        else:
            m.generate(prompt, max_tokens=1, callback=on_token, **greedy)
        n_prompt = m.last_generation.n_evaluated if ours else len(tokenize(prompt))
        pp[mode] = n_prompt / (first[0] - t0)
    out["pp"] = pp
    out["n_prompt"] = n_prompt

    # generation
    n_gen = a.n_gen

    def tg_once(mode: str) -> Tuple[float, int]:
        reset()
        stamps: List[float] = []

        def on_token(_tok: int, _text: str) -> bool:
            stamps.append(time.perf_counter())
            return True

        if mode == "blocking" and ours:
            # the whole call, less the prompt's evaluation as the engine timed it
            t0 = time.perf_counter()
            m.generate(TG_PROMPT, max_tokens=n_gen, **greedy)
            t_all = time.perf_counter() - t0
            produced = m.last_generation.n_generated
            return produced / (t_all - m.last_generation.prompt_ms / 1000), produced
        if mode == "blocking":
            # no engine timings: the time of n+1 tokens less that of 1
            t0 = time.perf_counter()
            m.generate(TG_PROMPT, max_tokens=1, **greedy)
            t_one = time.perf_counter() - t0
            reset()
            t0 = time.perf_counter()
            m.generate(TG_PROMPT, max_tokens=n_gen + 1, **greedy)
            return n_gen / (time.perf_counter() - t0 - t_one), n_gen + 1
        if mode == "streaming":
            for _ in m.generate(TG_PROMPT, max_tokens=n_gen + 1, streaming=True, **greedy):
                stamps.append(time.perf_counter())
        else:
            m.generate(TG_PROMPT, max_tokens=n_gen + 1, callback=on_token, **greedy)
        n = m.last_generation.n_generated if ours else len(stamps)
        # pieces may merge tokens (UTF-8, stop strings): count the tokens, time the span
        return (n - 1) / (stamps[-1] - stamps[0]), n

    tg: Dict[str, float] = {}
    produced = 0
    for mode in rotated(MODES, a.rep):  # which runs first changes from repetition to repetition
        tg[mode], made = tg_once(mode)
        produced = max(produced, made)
    out["tg"] = tg
    out["n_generated"] = produced

    # a 10-turn chat: latency and evaluated tokens per turn
    chat = []
    with m.chat_session():
        for text in CHAT_TURNS:
            t0 = time.perf_counter()
            m.generate(text, max_tokens=24, **greedy)
            turn = {"latency_s": time.perf_counter() - t0}
            if ours:
                s = m.last_generation
                turn.update(n_evaluated=s.n_evaluated, n_reused=s.n_reused, n_generated=s.n_generated)
            chat.append(turn)
    out["chat"] = chat
    return out


def worker_llama_cpp_python(a: argparse.Namespace) -> Dict[str, Any]:
    t0 = time.perf_counter()
    import llama_cpp
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a.model, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=2048,
                          verbose=False)
    load_s = time.perf_counter() - t0

    def tokenize(text: str) -> List[int]:
        return llm.tokenize(text.encode())

    prompt = _prompt_of(tokenize, a.n_prompt)
    greedy = dict(temperature=0.0, top_k=1)
    llm(prompt, max_tokens=4, **greedy)
    out: Dict[str, Any] = {"version": llama_cpp.__version__, "import_s": import_s, "load_s": load_s}
    llm.reset()
    t0 = time.perf_counter()
    llm(prompt, max_tokens=1, **greedy)
    out["pp"] = {"blocking": len(tokenize(prompt)) / (time.perf_counter() - t0)}
    out["n_prompt"] = len(tokenize(prompt))
    stamps = []
    llm.reset()
    for _ in llm(TG_PROMPT, max_tokens=a.n_gen + 1, stream=True, **greedy):
        stamps.append(time.perf_counter())
    out["tg"] = {"streaming": (len(stamps) - 1) / (stamps[-1] - stamps[0])}
    return out


WORKERS = {"gpt4all": worker_gpt4all, "llama-cpp-python": worker_llama_cpp_python}


# ---------------------------------------------------------------- the driver

def run_measured(cmd: List[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[Path] = None) -> Tuple[str, str, float]:
    """Runs cmd; returns its stdout, its stderr and its own peak RSS in MB (Linux/macOS)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        p = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=env, cwd=cwd, text=True)
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
            rss_mb = usage.ru_maxrss * scale
        else:
            p.wait()
            rss_mb = float("nan")
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
    return out, err, rss_mb


def run_with_rss(cmd: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[str, float]:
    """Runs cmd; returns its stdout and its own peak RSS in MB (Linux/macOS)."""
    out, _, rss = run_measured(cmd, env)
    return out, rss


def llama_bench(exe: Path, model: str, threads: int, n_prompt: int, n_gen: int) -> Tuple[float, float]:
    # run in its own folder: ggml also looks for backends in the working directory
    out, _, rss = run_measured([str(exe), "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                                "-r", "1", "-o", "json"], cwd=exe.parent)
    (row,) = json.loads(out)
    return float(row["avg_ts"]), rss


_CPU_VARIANT_FILE = re.compile(r"^(?:lib)?ggml-cpu-(.+)\.(?:so|dll|dylib)$")


def llmodel_cpu_variant(library: Path, env: Dict[str, str]) -> str:
    """The CPU variant the llmodel library (a file or its folder) picks on this machine, asked in a fresh
    process; "native" for a build with one CPU backend linked in, "" when it cannot be asked."""
    name = {"win32": "llmodel.dll", "darwin": "libllmodel.dylib"}.get(sys.platform, "libllmodel.so")
    path = library / name if library.is_dir() else library
    code = ("import ctypes, sys; f = ctypes.CDLL(sys.argv[1]).llmodel_cpu_variant; f.restype = ctypes.c_char_p; "
            "f.argtypes = []; print(f().decode())")
    try:
        return subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"could not ask {path} for its CPU variant: {e}", file=sys.stderr)
        return ""


def pin_cpu_variant(exe: Path, variant: str) -> Path:
    """exe, or the same program in a folder beside its own that holds only `variant`'s CPU backend (hard links;
    copies where links fail), so that llama.cpp's backend search finds what llmodel uses."""
    src = exe.parent
    files = [f for f in src.iterdir() if f.is_file()]
    variants = {f.name: m.group(1) for f in files if (m := _CPU_VARIANT_FILE.match(f.name))}
    if not variants:
        return exe  # one CPU backend linked in: nothing to choose
    if variant not in variants.values():
        print(f"warning: llmodel uses CPU variant {variant or '?'!r}, which {src} lacks; {exe.name} picks its own "
              f"(not like for like)", file=sys.stderr)
        return exe
    dst = src.parent / f"{src.name}-cpu-{variant}"
    dst.mkdir(exist_ok=True)
    for f in dst.iterdir():  # a variant left by an older build
        if f.name in variants and variants[f.name] != variant:
            f.unlink()
    for f in files:
        if variants.get(f.name, variant) != variant:
            continue
        target = dst / f.name
        if target.exists():
            if os.path.samefile(f, target):
                continue
            target.unlink()
        try:
            os.link(f.resolve(), target)
        except OSError:
            shutil.copy2(f, target)
    return dst / exe.name


def worker(kind: str, python: str, a: argparse.Namespace, threads: int, env: Dict[str, str],
           rep: int) -> Dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--model", a.model, "--threads", str(threads),
           "--n-prompt", str(a.n_prompt), "--n-gen", str(a.n_gen), "--rep", str(rep)]
    out, rss = run_with_rss(cmd, env)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = rss
    return result


def import_time(python: str, env: Dict[str, str], reps: int = 5) -> float:
    code = "import time; t = time.perf_counter(); import gpt4all; print(time.perf_counter() - t)"
    times = [float(subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
             for _ in range(reps)]
    return statistics.median(times) * 1000


def build_llama_bench() -> None:
    tree = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_llama_cpp.py")], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    gen = [] if (BENCH_BUILD / "CMakeCache.txt").exists() else ["-G", "Ninja"]
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(BENCH_BUILD), *gen, f"-DLLAMA_CPP_DIR={tree}",
                    "-DLLMODEL_BUILD_LLAMA_BENCH=ON"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BENCH_BUILD), "-j", str(os.cpu_count() or 2)], check=True)


def default_model() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from fetch_models import ensure_model

    return str(ensure_model("smollm2"))


def machine() -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform()}


def median(xs: List[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a GGUF file (default: SmolLM2-135M-Instruct Q4_1, fetched)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--n-prompt", type=int, default=128, help="prompt tokens for pp (default 128)")
    ap.add_argument("--n-gen", type=int, default=64, help="generated tokens for tg (default 64)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each contender (default 5)")
    ap.add_argument("--llama-bench", type=Path, default=BENCH_BUILD / "bin" / "llama-bench")
    ap.add_argument("--library", type=Path, default=BENCH_BUILD / "bin",
                    help="the llmodel build gpt4all uses (default: the one beside llama-bench)")
    ap.add_argument("--build", action="store_true", help="configure and build build-bench/ first")
    ap.add_argument("--peer", action="append", default=[], metavar="KIND=PYTHON",
                    help="also measure a peer: original=PY (a Python with the original gpt4all package) or "
                         "llama-cpp-python=PY")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmark.json", help="where to write the results")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        a.threads = int(a.threads)
        print(json.dumps(WORKERS[a.worker](a)))
        return 0

    if a.build:
        build_llama_bench()
    if not a.llama_bench.exists():
        sys.exit(f"{a.llama_bench} is missing: run with --build (or pass --llama-bench)")
    a.model = a.model or default_model()
    threads = [int(t) for t in a.threads.split(",")]
    ours_env = dict(os.environ, GPT4ALL_LIBRARY=str(a.library),
                    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "python"), os.environ.get("PYTHONPATH")])))
    cpu_variant = llmodel_cpu_variant(a.library, ours_env)
    a.llama_bench = pin_cpu_variant(a.llama_bench, cpu_variant)
    contenders: List[Tuple[str, str, str, Dict[str, str]]] = [("gpt4all", "gpt4all", sys.executable, ours_env)]
    for spec in a.peer:
        kind, _, python = spec.partition("=")
        clean = {k: v for k, v in os.environ.items() if k not in ("GPT4ALL_LIBRARY", "PYTHONPATH")}
        if kind == "original":
            contenders.append(("original gpt4all", "gpt4all", python, clean))
        elif kind == "llama-cpp-python":
            contenders.append(("llama-cpp-python", "llama-cpp-python", python, clean))
        else:
            sys.exit(f"unknown peer {kind!r}")

    failed: Dict[str, str] = {}
    results: Dict[str, Any] = {"machine": machine(), "model": a.model, "n_prompt": a.n_prompt, "n_gen": a.n_gen,
                               "reps": a.reps, "llama_bench": str(a.llama_bench), "library": str(a.library),
                               "cpu_variant": cpu_variant, "threads": {}}
    for t in threads:
        runs: Dict[str, List[Any]] = {"llama-bench pp": [], "llama-bench tg": [], "llama-bench rss": []}
        for name, *_ in contenders:
            runs[name] = []
        for rep in range(a.reps):
            order = rotated(["bench-pp", "bench-tg"] + [c[0] for c in contenders], rep)
            for item in order:
                if item == "bench-pp":
                    ts, rss = llama_bench(a.llama_bench, a.model, t, a.n_prompt, 0)
                    runs["llama-bench pp"].append(ts)
                    runs["llama-bench rss"].append(rss)
                elif item == "bench-tg":
                    ts, rss = llama_bench(a.llama_bench, a.model, t, 0, a.n_gen)
                    runs["llama-bench tg"].append(ts)
                    runs["llama-bench rss"].append(rss)
                elif item not in failed:
                    _, kind, python, env = next(c for c in contenders if c[0] == item)
                    try:
                        runs[item].append(worker(kind, python, a, t, env, rep))
                    except RuntimeError as e:
                        if item == contenders[0][0]:
                            raise  # gpt4all itself must run
                        # a peer that cannot run this model will not on the next try either
                        failed[item] = str(e).strip().splitlines()[-1]
                        print(f"{item}: not measured: {e}", file=sys.stderr)
            print(f"threads {t}: repetition {rep + 1}/{a.reps} done", file=sys.stderr)
        results["threads"][str(t)] = summarize(runs, contenders)
    results["not_measured"] = failed
    results["import_ms"] = import_time(sys.executable, ours_env)
    a.json.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nfull results: {a.json}")
    return 0


def summarize(runs: Dict[str, List[Any]], contenders) -> Dict[str, Any]:
    bench_pp, bench_tg = median(runs["llama-bench pp"]), median(runs["llama-bench tg"])
    s: Dict[str, Any] = {"llama-bench": {"pp": bench_pp, "tg": bench_tg, "pp_runs": runs["llama-bench pp"],
                                         "tg_runs": runs["llama-bench tg"],
                                         "peak_rss_mb": max(runs["llama-bench rss"])}}
    for name, *_ in contenders:
        rs = runs[name]
        if not rs:
            continue
        entry: Dict[str, Any] = {"version": rs[0]["version"], "load_s": median([r["load_s"] for r in rs]),
                                 "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "n_prompt": rs[0]["n_prompt"]}
        for test, ref_runs in (("pp", runs["llama-bench pp"]), ("tg", runs["llama-bench tg"])):
            for mode in [m for m in MODES if m in rs[0][test]]:
                vals = [r[test][mode] for r in rs]
                # each repetition against llama-bench's run of the same
                # repetition, minutes apart at most: drift cancels
                paired = [v / b for v, b in zip(vals, ref_runs)]
                entry[f"{test} {mode}"] = {"tps": median(vals), "ratio": median(paired), "runs": vals,
                                           "paired_ratios": paired}
        if "chat" in rs[0]:
            turns = list(zip(*[r["chat"] for r in rs]))
            entry["chat"] = [{k: median([t[k] for t in turn]) for k in turn[0]} for turn in turns]
        s[name] = entry
    return s


def print_table(results: Dict[str, Any]) -> None:
    m = results["machine"]
    print(f"\n{Path(results['model']).name} on {m['cpu']} ({m['logical_cpus']} logical CPUs); "
          f"pp{results['n_prompt']}, tg{results['n_gen']}, median of {results['reps']}")
    print(f"{'threads':>7}  {'test':<4} {'contender':<34} {'tokens/s':>10} {'ratio':>7}   (ratio: median of per-repetition ratios)")
    for t, s in results["threads"].items():
        for test in ("pp", "tg"):
            print(f"{t:>7}  {test:<4} {'llama-bench':<34} {s['llama-bench'][test]:>10.1f} {'1.00':>7}")
            for name, entry in s.items():
                if name == "llama-bench":
                    continue
                for key, v in entry.items():
                    if key.startswith(test + " "):
                        print(f"{'':>7}  {'':<4} {name + ' ' + key.split(' ', 1)[1]:<34} {v['tps']:>10.1f} "
                              f"{v['ratio']:>7.3f}")
    for t, s in results["threads"].items():
        for name, entry in s.items():
            if name == "llama-bench":
                print(f"threads {t}: llama-bench peak RSS {entry['peak_rss_mb']:.0f} MB")
                continue
            print(f"threads {t}: {name} {entry['version']}: load {entry['load_s'] * 1000:.0f} ms, "
                  f"peak RSS {entry['peak_rss_mb']:.0f} MB")
            if "chat" in entry:
                lat = " ".join(f"{c['latency_s'] * 1000:.0f}" for c in entry["chat"])
                print(f"  10-turn chat, latency ms per turn: {lat}")
                if "n_evaluated" in entry["chat"][0]:
                    ev = " ".join(f"{c['n_evaluated']:.0f}" for c in entry["chat"])
                    print(f"  prompt tokens evaluated per turn: {ev}")
    for name, why in results.get("not_measured", {}).items():
        print(f"{name}: not measured ({why})")
    print(f"import gpt4all: {results['import_ms']:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
