#!/usr/bin/env python3
"""How fast is gpt4all from Python, next to llama.cpp's own llama-bench?

    python scripts/benchmark.py --build              # build llama-bench, then measure
    python scripts/benchmark.py --threads 1,2 --reps 5 --json bench.json
    python scripts/benchmark.py --batched            # P conversations at once, against llama-batched-bench

Both contenders use the same libllama/libggml files: llama-bench is built into
build-bench/ from the same llama.cpp tree with the same flags as the package
(-DLLMODEL_BUILD_LLAMA_BENCH=ON), and gpt4all is pointed at that folder. Each
repetition runs every contender once, in an order that rotates, so a noisy
neighbour hurts them alike. Every measurement runs in a fresh process, whose
peak RSS is read from the kernel, and runs again (up to 5 times) when other
processes took more than 5% of the machine's CPU meanwhile (Linux): llama.cpp's
threads spin while they wait for each other, so a busy neighbour can cut the
speed a hundredfold, which alternation does not cancel.

Same CPU code too: in a build with every CPU variant, llmodel picks its
variant itself (skipping sapphirerapids, whose AMX kernels die with SIGILL),
while llama.cpp's tools would load the best-scoring one, sapphirerapids
included. So the tools run from a folder beside bin/ (bin-cpu-<variant>/,
hard links) that holds only the variant llmodel reports. (A --library built
with one CPU backend linked in, next to tools built with every variant: the
tools take the variant the llmodel beside them picks, and a warning says
that this is not like for like.)

--device cuda (or any GPU word) offloads every layer, for llama-bench too
(-ngl 999), on a build with that GPU backend (scripts/gpu_device_check.sh).

Measured, per thread count:
  pp  prompt processing, tokens/s: a prompt of --n-prompt tokens, from an
      empty cache, to the first generated token (gpt4all's default
      n_batch=8, as LangChain passes it, which the engine's 512-token
      batches replace); llama-bench -p N -n 0.
  tg  generation, tokens/s: --n-gen tokens, greedy, end-of-generation
      tokens banned (llama-bench samples nothing, so nothing ends its runs);
      llama-bench -p 0 -n N.
      Blocking: the whole call less the prompt's evaluation (as the engine
      timed it); streaming and callback: between the first and the last token.
Also: model load time, a 10-turn chat (latency and evaluated prompt tokens per
turn, which must stay flat), `import gpt4all` time, and peers (the original
gpt4all package, llama-cpp-python) when --peer names a Python that has them.

--batched (2 threads unless --threads says otherwise) measures instead the
aggregate generation speed of P conversations on ONE model generating at the
same time (decoded together, one llama_decode per step), P = --parallel
(1,2,4,8), against llama.cpp's llama-batched-bench from the same build, with
the same model and threads. Both get the context llmodel makes: a KV cache
of its own for each sequence (not unified) of n_ctx cells (--n-ctx, default
pp+tg rounded up to 256) for up to max P sequences, n_batch 512, n_ubatch
min(n_batch, 512), flash attention auto: llama-batched-bench runs as
`-c n_ctx*maxP -b 512 -ub 512 -fa auto -npp 128 -ntg 64 -npl 1,2,4,8 -t T`, in one
process for every P, as gpt4all's worker loads its model once (n_parallel =
max P). Its S_TG is P*tg over the time of its tg steps, each one decode of
all P sequences, after every prompt was evaluated; it samples nothing (its
tokens are random). gpt4all's figure is built to be that, and no kinder:
  1. P new conversations each evaluate their own prompt of exactly pp tokens
     (n_predict=0), the P calls together on P threads; P*pp over that wall
     time is printed beside S_PP, for information;
  2. P threads wait at one barrier, then each calls
     llmodel_conversation_generate_tokens with its same prompt (cached but
     for its last token, evaluated again for its logits: with the last
     sampled token never decoded, that is tg decode steps, as batched-bench
     makes) for tg tokens, greedy (temp 0, top_k 1, no penalty: an argmax),
     end-of-generation tokens banned (logit bias) so every sequence makes
     all tg tokens, as batched-bench's do. tokens/s = P*tg over the wall time
     from the barrier's release to the return of the last call: it includes
     what batched-bench does not pay (sampling, the calls' start, a
     conversation that joins the batch a step late, ctypes). The calls'
     own prompt_ms and generate_ms overlap, so they cannot be summed; the
     JSON keeps P*tg / max(prompt_ms + generate_ms) as engine_tps.
  Two ways of calling: blocking (no response callback: Python waits in C)
  and callback (a Python callback per token, which takes the GIL for each).
Each repetition's ratio is against batched-bench's run of the same
repetition; the target is >= 0.95 at every P. P=1 is also set against
llama-bench's single stream at the same depth (-p 0 -n tg -d pp). Also peak
RSS of both processes and gpt4all's resident memory with max P
conversations open. The worker goes through ctypes (gpt4all._native and the
llmodel_conversation_* functions), so it needs only an ABI 4 library.
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
BENCH_BUILD = ROOT / "build-bench"
TG_PROMPT = "Count from one to one hundred, in words, separated by commas: one, two, three,"
CHAT_TURNS = [f"Tell me one short fact about the number {i}." for i in range(1, 11)]
MODES = ("blocking", "streaming", "callback")
BATCHED_MODES = ("blocking", "callback")
BATCHED_N_BATCH = 512  # llmodel's default; it makes n_ubatch min(n_batch, 512)
BATCHED_TARGET = 0.95  # the least ratio to llama-batched-bench's S_TG the batched decoding should reach


def rotated(items, k: int) -> list:
    k %= len(items)
    return list(items[k:]) + list(items[:k])


# ---------------------------------------------------------------- workers
# Each runs in its own process and prints one JSON object on stdout.

def _prompt_of(tokenize, n: int, start: int = 0) -> str:
    """Plain text that the model's tokenizer turns into about n tokens (at least n); start rotates the words,
    for prompts that differ from their first word."""
    words = rotated(("the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
                     "boxing matches in a small village near the river ").split(), start)
    text = f"{start // len(words)} " if start >= len(words) else ""
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
    on_gpu = a.device != "cpu"
    m = GPT4All(model_file.name, model_path=str(model_file.parent), allow_download=False, n_threads=a.threads,
                device=a.device, n_ctx=2048, **({"ngl": 999} if on_gpu else {}))
    load_s = time.perf_counter() - t0
    ours = hasattr(m, "last_generation")
    native = m.model

    def tokenize(text: str) -> List[int]:
        return native.tokenize(text) if ours else text.split()

    def reset() -> None:
        if ours:
            native.reset()  # else the original starts each plain generate afresh

    prompt = _prompt_of(tokenize, a.n_prompt)
    greedy: Dict[str, Any] = dict(temp=0.0, top_k=1)
    m.generate(prompt, max_tokens=4, **greedy)  # warm-up
    out: Dict[str, Any] = {"version": getattr(gpt4all, "__version__", "?"), "import_s": import_s, "load_s": load_s}
    if ours:
        out["backend"], out["device_name"] = m.backend, m.device

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

    # generation: n_gen tokens every time, as llama-bench makes (it samples
    # nothing, so nothing ends its runs); the greedy reply to TG_PROMPT can
    # end early where the sums round differently (it does on CUDA after 2
    # tokens), so our end-of-generation tokens are banned
    n_gen = a.n_gen
    if ours:
        from gpt4all import _native

        lib, handle = _native.lib(), native._handle
        eog = [t for t in range(native.info.n_vocab) if lib.llmodel_token_is_eog(handle, t)]
        tg_params = dict(greedy, logit_bias={t: float("-inf") for t in eog})
    else:
        tg_params = greedy

    def tg_once(mode: str) -> Tuple[float, int]:
        reset()
        stamps: List[float] = []

        def on_token(_tok: int, _text: str) -> bool:
            stamps.append(time.perf_counter())
            return True

        if mode == "blocking" and ours:
            # the whole call, less the prompt's evaluation as the engine timed it
            t0 = time.perf_counter()
            m.generate(TG_PROMPT, max_tokens=n_gen, **tg_params)
            t_all = time.perf_counter() - t0
            produced = m.last_generation.n_generated
            return produced / (t_all - m.last_generation.prompt_ms / 1000), produced
        if mode == "blocking":
            # no engine timings: the time of n+1 tokens less that of 1
            t0 = time.perf_counter()
            m.generate(TG_PROMPT, max_tokens=1, **tg_params)
            t_one = time.perf_counter() - t0
            reset()
            t0 = time.perf_counter()
            m.generate(TG_PROMPT, max_tokens=n_gen + 1, **tg_params)
            return n_gen / (time.perf_counter() - t0 - t_one), n_gen + 1
        if mode == "streaming":
            for _ in m.generate(TG_PROMPT, max_tokens=n_gen + 1, streaming=True, **tg_params):
                stamps.append(time.perf_counter())
        else:
            m.generate(TG_PROMPT, max_tokens=n_gen + 1, callback=on_token, **tg_params)
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
    if ours and produced < n_gen:
        raise RuntimeError(f"generation stopped after {produced} of {n_gen} tokens: the figure would not compare")

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


def _llmodel_abi4() -> Any:
    """ctypes access to an ABI 4 llmodel library (conversations): through gpt4all._native when it speaks
    ABI 4, with only what it does not declare yet declared here; else the library is opened (where
    _native would look) and declared here, with the ABI 4 structs."""
    import ctypes
    from ctypes import POINTER, Structure, byref, c_bool, c_char_p, c_float, c_int32, c_size_t, c_void_p
    from types import SimpleNamespace

    from gpt4all import _native as native

    class LogitBias(Structure):
        _fields_ = [("token", c_int32), ("bias", c_float)]

    if native.ABI_VERSION >= 4:
        lib = native.lib()  # checks the version, routes the log to Python's logging
        LoadParams, GenerateParams = native.LoadParams, native.GenerateParams
        declared = {f[0] for f in native._FUNCTIONS}
    else:
        def abi4(old: Any, added: List[tuple]) -> List[tuple]:
            have = dict(old._fields_)
            return list(old._fields_) + [f for f in added if f[0] not in have]

        class LoadParams(Structure):  # llmodel.h, ABI 4
            _fields_ = abi4(native.LoadParams, [("n_parallel", c_int32)])

        class GenerateParams(Structure):  # llmodel.h, ABI 4
            _fields_ = abi4(native.GenerateParams, [
                ("frequency_penalty", c_float), ("presence_penalty", c_float), ("logit_bias", POINTER(LogitBias)),
                ("n_logit_bias", c_size_t)])

        path = next((p for p in native._candidates() if p.is_file()), None)
        if path is None:
            raise SystemExit(f"no llmodel library in {[str(p) for p in native._candidates()]}")
        lib = ctypes.CDLL(str(path))
        lib.llmodel_abi_version.restype, lib.llmodel_abi_version.argtypes = c_int32, []
        if lib.llmodel_abi_version() != 4:
            raise SystemExit(f"{path} has ABI version {lib.llmodel_abi_version()}; --batched needs 4 (conversations)")
        lib.llmodel_set_log_callback.restype = None
        lib.llmodel_set_log_callback.argtypes = [native.LogCallback, c_void_p]
        lib.llmodel_set_log_callback(native._log_callback, None)  # quiet, as the package is
        declared = set()
    assert "n_parallel" in dict(LoadParams._fields_), "gpt4all._native says ABI 4 but its LoadParams lacks n_parallel"
    if "llmodel_conversation_new" in declared:
        ConvPtr = lib.llmodel_conversation_new.argtypes[1]._type_
    else:
        ConvPtr = c_void_p
    ModelPtr, GenerateResult = native.ModelPtr, native.GenerateResult  # GenerateResult is unchanged in ABI 4
    signatures = [
        ("llmodel_last_error", c_char_p, []),
        ("llmodel_cpu_variant", c_char_p, []),
        ("llmodel_load_default_params", LoadParams, []),
        ("llmodel_model_load", c_int32, [c_char_p, POINTER(LoadParams), POINTER(ModelPtr)]),
        ("llmodel_model_free", None, [ModelPtr]),
        ("llmodel_model_get_info", c_int32, [ModelPtr, POINTER(native.ModelInfo)]),
        ("llmodel_token_is_eog", c_bool, [ModelPtr, c_int32]),
        ("llmodel_tokenize", c_int32,
         [ModelPtr, c_char_p, c_size_t, c_bool, c_bool, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
        ("llmodel_generate_default_params", GenerateParams, []),
        ("llmodel_conversation_new", c_int32, [ModelPtr, POINTER(ConvPtr)]),
        ("llmodel_conversation_free", None, [ConvPtr]),
        ("llmodel_conversation_generate_tokens", c_int32,
         [ConvPtr, POINTER(c_int32), c_size_t, POINTER(GenerateParams), native.PromptCallback,
          native.ResponseCallback, c_void_p, POINTER(GenerateResult)]),
    ]
    for name, restype, argtypes in signatures:
        if name not in declared:
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise SystemExit(f"{lib._name} says ABI 4 but lacks {name}(): is it built from a tree whose "
                                 f"llmodel.h is ABI 4 and whose C++ is not yet?") from None
            fn.restype, fn.argtypes = restype, argtypes

    def check(status: int, what: str) -> None:  # on the thread that made the call: the message is per thread
        if status != 0:
            raise RuntimeError(f"{what} failed ({status}): {(lib.llmodel_last_error() or b'').decode()}")

    return SimpleNamespace(lib=lib, native=native, LoadParams=LoadParams, GenerateParams=GenerateParams,
                           GenerateResult=GenerateResult, LogitBias=LogitBias, ModelPtr=ModelPtr, ConvPtr=ConvPtr,
                           check=check, byref=byref)


def _together(n: int, call) -> Tuple[float, list]:
    """Runs call(0) .. call(n-1) on n threads released by one barrier; returns the seconds from the release to
    the return of the last, and the results."""
    import threading

    released: List[float] = []
    barrier = threading.Barrier(n, action=lambda: released.append(time.perf_counter()))
    ends, results, errors = [0.0] * n, [None] * n, []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = call(i)
            ends[i] = time.perf_counter()
        except BaseException as e:  # noqa: BLE001 (re-raised on the main thread)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return max(ends) - released[0], results


def worker_gpt4all_batched(a: argparse.Namespace) -> Dict[str, Any]:
    """Aggregate generation speed of P conversations on one model, generating at the same time (ABI 4)."""
    import ctypes

    import gpt4all

    L = _llmodel_abi4()
    lib, native, check, byref = L.lib, L.native, L.check, L.byref
    parallel = [int(p) for p in a.parallel.split(",")]

    lp = lib.llmodel_load_default_params()
    lp.n_ctx, lp.n_batch, lp.n_threads, lp.n_parallel = a.n_ctx, BATCHED_N_BATCH, a.threads, max(parallel)
    lp.n_gpu_layers, lp.device = 0, b"cpu"
    model = L.ModelPtr()
    t0 = time.perf_counter()
    check(lib.llmodel_model_load(a.model.encode(), byref(lp), byref(model)), "llmodel_model_load")
    load_s = time.perf_counter() - t0
    info = native.ModelInfo()
    check(lib.llmodel_model_get_info(model, byref(info)), "llmodel_model_get_info")

    def tokenize(text: str) -> List[int]:
        b = text.encode()
        buf = (ctypes.c_int32 * (len(b) + 8))()
        n = ctypes.c_size_t()
        check(lib.llmodel_tokenize(model, b, len(b), True, False, buf, len(buf), byref(n)), "llmodel_tokenize")
        return list(buf[:n.value])

    # a different prompt of exactly n_prompt tokens per conversation (the word list rotated)
    prompts = [(ctypes.c_int32 * a.n_prompt)(*tokenize(_prompt_of(tokenize, a.n_prompt, start=i))[:a.n_prompt])
               for i in range(max(parallel))]
    # every sequence makes all n_gen tokens, as llama-batched-bench's do: end-of-generation tokens are banned
    eog = [t for t in range(info.n_vocab) if lib.llmodel_token_is_eog(model, t)]
    bias = (L.LogitBias * len(eog))(*[(t, float("-inf")) for t in eog])

    def params(n_predict: int) -> Any:
        gp = lib.llmodel_generate_default_params()
        gp.temp, gp.top_k, gp.top_p, gp.min_p, gp.repeat_penalty = 0.0, 1, 1.0, 0.0, 1.0  # greedy: an argmax
        gp.frequency_penalty = gp.presence_penalty = 0.0
        gp.n_predict, gp.n_batch, gp.context_shift, gp.seed = n_predict, 0, False, 1
        gp.logit_bias = ctypes.cast(bias, dict(L.GenerateParams._fields_)["logit_bias"])
        gp.n_logit_bias = len(eog)
        return gp

    prefill, generate = params(0), params(a.n_gen)

    def run(conv: Any, prompt: Any, gp: Any, on_token: Any = None) -> Any:
        res = L.GenerateResult()
        check(lib.llmodel_conversation_generate_tokens(conv, prompt, len(prompt), byref(gp), native.PromptCallback(),
                                                       on_token or native.ResponseCallback(), None, byref(res)),
              "llmodel_conversation_generate_tokens")
        return res

    def new_conversations(n: int) -> List[Any]:
        convs = []
        for _ in range(n):
            c = L.ConvPtr()
            check(lib.llmodel_conversation_new(model, byref(c)), "llmodel_conversation_new")
            convs.append(c)
        return convs

    warm = new_conversations(1)
    run(warm[0], prompts[0], params(4))
    lib.llmodel_conversation_free(warm[0])

    out: Dict[str, Any] = {"version": getattr(gpt4all, "__version__", "?"), "load_s": load_s,
                           "cpu_variant": (lib.llmodel_cpu_variant() or b"").decode(), "n_eog_banned": len(eog),
                           "P": {}}
    for p in parallel:
        row: Dict[str, Any] = {}
        for mode in rotated(BATCHED_MODES, a.rep):
            convs = new_conversations(p)
            counted = [0] * p

            def counter(i: int) -> Any:
                def on_token(_tok: int, _piece: Any, _n: int, _ud: Any) -> bool:
                    counted[i] += 1
                    return True
                return native.ResponseCallback(on_token)

            callbacks = [counter(i) for i in range(p)] if mode == "callback" else [None] * p
            try:
                # 1. every prompt evaluated (together, as batched-bench evaluates them), nothing generated
                pp_s, pp_res = _together(p, lambda i: run(convs[i], prompts[i], prefill))
                # 2. the same prompts again, now cached (only the last token is evaluated again, for its
                #    logits) and n_gen tokens each: from one barrier to the return of the last call
                tg_s, tg_res = _together(p, lambda i: run(convs[i], prompts[i], generate, callbacks[i]))
                if p == max(parallel):
                    out["rss_open_mb"] = max(out.get("rss_open_mb", 0.0), _rss_now_mb())
            finally:
                for c in convs:
                    lib.llmodel_conversation_free(c)
            n_generated = sum(r.n_generated for r in tg_res)
            engine_s = max(r.prompt_ms + r.generate_ms for r in tg_res) / 1000
            row[mode] = {"tps": n_generated / tg_s, "engine_tps": n_generated / engine_s, "tg_s": tg_s,
                         "pp_tps": sum(r.n_evaluated for r in pp_res) / pp_s, "pp_s": pp_s,
                         "n_generated": [r.n_generated for r in tg_res],
                         "n_reevaluated": [r.n_evaluated for r in tg_res],
                         "stop_reasons": sorted({r.stop_reason for r in tg_res}),
                         "callback_tokens": sum(counted) if mode == "callback" else None}
        out["P"][str(p)] = row
    lib.llmodel_model_free(model)
    return out


def _rss_now_mb() -> float:
    """This process's resident memory now (Linux), else NaN."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


WORKERS = {"gpt4all": worker_gpt4all, "gpt4all-batched": worker_gpt4all_batched,
           "llama-cpp-python": worker_llama_cpp_python}


# ---------------------------------------------------------------- the driver

OTHERS_MAX = 0.05  # the most of the machine's CPU time other processes may take while a measurement runs
OTHERS_TRIES = 5
contended: List[Dict[str, Any]] = []  # measurements done again because other processes ran meanwhile


def _cpu_seconds() -> Optional[Tuple[float, float]]:
    """The machine's busy and total CPU seconds so far (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz  # less idle and iowait


def run_measured(cmd: List[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[Path] = None) -> Tuple[str, str, float]:
    """Runs cmd; returns its stdout, its stderr and its own peak RSS in MB (Linux/macOS).

    Runs it again (up to OTHERS_TRIES times, after a pause) when other processes took more than OTHERS_MAX of
    the machine's CPU time meanwhile (Linux): llama.cpp's threads wait for each other spinning, so sharing the
    cores does not cost a share of the speed but can cost nearly all of it (0.3 tokens/s instead of 95 was
    seen on 2 cores), which no alternation of contenders cancels."""
    import tempfile

    for attempt in range(OTHERS_TRIES):
        before = _cpu_seconds()
        with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
            p = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=env, cwd=cwd, text=True)
            if hasattr(os, "wait4"):
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
                rss_mb = usage.ru_maxrss * scale
                own_s = usage.ru_utime + usage.ru_stime
            else:
                p.wait()
                rss_mb = own_s = float("nan")
            out_f.seek(0)
            err_f.seek(0)
            out, err = out_f.read(), err_f.read()
        after = _cpu_seconds()
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
        if before is None or after is None or not after[1] > before[1] or own_s != own_s:
            break
        others = max(0.0, after[0] - before[0] - own_s) / (after[1] - before[1])
        if others <= OTHERS_MAX:
            break
        what = Path(cmd[0]).name + (f" --worker {cmd[cmd.index('--worker') + 1]}" if "--worker" in cmd else "")
        kept = attempt + 1 == OTHERS_TRIES
        contended.append({"run": what, "others_share": others, "attempt": attempt + 1, "kept": kept})
        print(f"other processes took {others:.0%} of the CPU while {what} ran: "
              f"{'kept anyway' if kept else 'measuring again'}", file=sys.stderr)
        if attempt + 1 < OTHERS_TRIES:
            time.sleep(10 * (attempt + 1))
    return out, err, rss_mb


def run_with_rss(cmd: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[str, float]:
    """Runs cmd; returns its stdout and its own peak RSS in MB (Linux/macOS)."""
    out, _, rss = run_measured(cmd, env)
    return out, rss


def llama_bench(exe: Path, model: str, threads: int, n_prompt: int, n_gen: int,
                depth: int = 0, device: str = "cpu") -> Tuple[float, float]:
    # every layer on the GPU, as gpt4all's ngl=999; none where the CPU is measured
    ngl = ["-ngl", "0"] if device == "cpu" else ["-ngl", "999"]
    # run in its own folder: ggml also looks for backends in the working directory
    out, _, rss = run_measured([str(exe), "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                                "-d", str(depth), "-r", "1", "-o", "json", *ngl], cwd=exe.parent)
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


def cpu_variant_files(folder: Path) -> Dict[str, str]:
    """The CPU backend variants in a build's folder: file name -> variant."""
    return {f.name: m.group(1) for f in folder.iterdir() if f.is_file() and (m := _CPU_VARIANT_FILE.match(f.name))}


def pin_cpu_variant(exe: Path, variant: str) -> Path:
    """exe, or the same program in a folder beside its own that holds only `variant`'s CPU backend (hard links;
    copies where links fail), so that llama.cpp's backend search finds what llmodel uses."""
    src = exe.parent
    files = [f for f in src.iterdir() if f.is_file()]
    variants = cpu_variant_files(src)
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
           rep: int, extra: Sequence[str] = ()) -> Dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--model", a.model, "--threads", str(threads),
           "--n-prompt", str(a.n_prompt), "--n-gen", str(a.n_gen), "--rep", str(rep), "--device", a.device, *extra]
    out, rss = run_with_rss(cmd, env)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = rss
    return result


def import_time(python: str, env: Dict[str, str], reps: int = 5) -> float:
    code = "import time; t = time.perf_counter(); import gpt4all; print(time.perf_counter() - t)"
    times = [float(subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
             for _ in range(reps)]
    return statistics.median(times) * 1000


def llama_batched_bench(exe: Path, model: str, threads: int, n_prompt: int, n_gen: int, parallel: List[int],
                        n_ctx: int) -> Tuple[Dict[str, Dict[str, Any]], float, Dict[str, Optional[str]]]:
    """One llama-batched-bench process over every P, set up as llmodel sets up its context: rows by P, its peak
    RSS, and what its log says about the CPU backend, flash attention and the KV cache."""
    # -c is the whole context: max P caches of n_ctx cells each, one per
    # sequence (no -kvu), as llmodel's context has once it has grown to max P
    cmd = [str(exe), "-m", model, "-t", str(threads), "-c", str(n_ctx * max(parallel)), "-b", str(BATCHED_N_BATCH),
           "-ub", str(min(BATCHED_N_BATCH, 512)), "-fa", "auto", "-npp", str(n_prompt), "-ntg", str(n_gen),
           "-npl", ",".join(map(str, parallel)), "--output-format", "jsonl",
           "-lv", "4"]  # the load's log (nothing is logged while it measures)
    out, err, rss = run_measured(cmd, cwd=exe.parent)
    rows = {str(r["pl"]): r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    missing = [p for p in parallel if str(p) not in rows]
    if missing:
        raise RuntimeError(f"{exe.name} measured no P={missing} (does P*(pp+tg) fit in -c {n_ctx}?):\n"
                           f"{err[-2000:]}")

    def grep(pattern: str) -> Optional[str]:
        m = re.search(pattern, err)
        return m.group(1) if m else None

    facts = {"cpu_backend": grep(r"loaded CPU backend from (\S+)"), "flash_attn": grep(r"Flash Attention (\w+)"),
             "kv_unified": grep(r"kv_unified\s*=\s*(\w+)")}
    return rows, rss, facts


def measure_batched(a: argparse.Namespace, threads: List[int], env: Dict[str, str],
                    tools_variant: str) -> Dict[str, Any]:
    parallel = [int(p) for p in a.parallel.split(",")]
    batched_bench = pin_cpu_variant(a.llama_batched_bench, tools_variant)
    results: Dict[str, Any] = {"machine": machine(), "model": a.model, "n_prompt": a.n_prompt, "n_gen": a.n_gen,
                               "reps": a.reps, "parallel": parallel, "n_ctx": a.n_ctx, "n_batch": BATCHED_N_BATCH,
                               "n_ubatch": min(BATCHED_N_BATCH, 512), "target_ratio": BATCHED_TARGET,
                               "llama_batched_bench": str(batched_bench), "llama_bench": str(a.llama_bench),
                               "library": str(a.library), "tools_cpu_variant": tools_variant, "threads": {}}
    for t in threads:
        runs: Dict[str, List[Any]] = {"llama-batched-bench": [], "llama-bench": [], "gpt4all": []}
        for rep in range(a.reps):
            for item in rotated(list(runs), rep):
                if item == "llama-batched-bench":
                    rows, rss, facts = llama_batched_bench(batched_bench, a.model, t, a.n_prompt, a.n_gen, parallel,
                                                           a.n_ctx)
                    runs[item].append({"rows": rows, "peak_rss_mb": rss, **facts})
                elif item == "llama-bench":
                    # one sequence, n_gen tokens after n_prompt in the cache: what P=1 does
                    ts, rss = llama_bench(a.llama_bench, a.model, t, 0, a.n_gen, depth=a.n_prompt)
                    runs[item].append({"tg": ts, "peak_rss_mb": rss})
                else:
                    runs[item].append(worker("gpt4all-batched", sys.executable, a, t, env, rep,
                                             ["--parallel", a.parallel, "--n-ctx", str(a.n_ctx)]))
            print(f"threads {t}: repetition {rep + 1}/{a.reps} done", file=sys.stderr)
        results["threads"][str(t)] = summarize_batched(runs, parallel, a.n_gen)
    return results


def summarize_batched(runs: Dict[str, List[Any]], parallel: List[int], n_gen: int) -> Dict[str, Any]:
    bb, lb, ours = runs["llama-batched-bench"], runs["llama-bench"], runs["gpt4all"]
    s: Dict[str, Any] = {
        "llama-batched-bench": {"peak_rss_mb": max(r["peak_rss_mb"] for r in bb),
                                **{k: bb[0][k] for k in ("cpu_backend", "flash_attn", "kv_unified")}, "P": {}},
        "llama-bench": {"tg": median([r["tg"] for r in lb]), "tg_runs": [r["tg"] for r in lb],
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in lb)},
    }
    g: Dict[str, Any] = {"version": ours[0]["version"], "cpu_variant": ours[0]["cpu_variant"],
                         "load_s": median([r["load_s"] for r in ours]),
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
                         "rss_open_mb": max(r.get("rss_open_mb", float("nan")) for r in ours), "P": {},
                         "single_stream": {}}
    for p in map(str, parallel):
        ref_tg = [r["rows"][p]["speed_tg"] for r in bb]
        ref_pp = [r["rows"][p]["speed_pp"] for r in bb]
        s["llama-batched-bench"]["P"][p] = {"s_tg": median(ref_tg), "s_pp": median(ref_pp), "s_tg_runs": ref_tg,
                                            "s_pp_runs": ref_pp}
        g["P"][p] = {}
        for mode in BATCHED_MODES:
            ms = [r["P"][p][mode] for r in ours]
            vals = [m["tps"] for m in ms]
            # each repetition against llama-batched-bench's run of the same repetition: drift cancels
            paired = [v / b for v, b in zip(vals, ref_tg)]
            g["P"][p][mode] = {
                "tps": median(vals), "ratio": median(paired), "runs": vals, "paired_ratios": paired,
                "engine_tps": median([m["engine_tps"] for m in ms]),
                "pp_tps": median([m["pp_tps"] for m in ms]),
                "pp_ratio": median([m["pp_tps"] / b for m, b in zip(ms, ref_pp)]),
                "all_generated": all(n == n_gen for m in ms for n in m["n_generated"]),
                "n_reevaluated": sorted({n for m in ms for n in m["n_reevaluated"]}),
            }
        if p == "1":
            for mode in BATCHED_MODES:
                vals = g["P"][p][mode]["runs"]
                paired = [v / b for v, b in zip(vals, s["llama-bench"]["tg_runs"])]
                g["single_stream"][mode] = {"tps": median(vals), "ratio": median(paired), "paired_ratios": paired}
    s["gpt4all"] = g
    return s


def print_contended(results: Dict[str, Any]) -> None:
    kept = [c for c in results.get("contended", []) if c["kept"]]
    if kept:
        print(f"warning: {len(kept)} measurement(s) kept although other processes took more than {OTHERS_MAX:.0%} "
              f"of the CPU meanwhile: {', '.join(c['run'] for c in kept)}")


def print_batched_table(results: Dict[str, Any]) -> None:
    m = results["machine"]
    target = results["target_ratio"]
    print(f"\n{Path(results['model']).name} on {m['cpu']} ({m['logical_cpus']} logical CPUs); P sequences at once, "
          f"each pp{results['n_prompt']} then tg{results['n_gen']}; n_ctx {results['n_ctx']} per sequence (a cache each), "
          f"n_batch {results['n_batch']}, n_ubatch {results['n_ubatch']}; median of {results['reps']}")
    print(f"{'threads':>7} {'P':>3}  {'gpt4all':<9} {'tokens/s':>9} {'S_TG':>9} {'ratio':>6}   (aggregate generation "
          f"tokens/s; S_TG: llama-batched-bench's; ratio: median of per-repetition ratios, target {target})")
    for t, s in results["threads"].items():
        for p in map(str, results["parallel"]):
            ref = s["llama-batched-bench"]["P"][p]["s_tg"]
            for mode in BATCHED_MODES:
                e = s["gpt4all"]["P"][p][mode]
                note = "" if e["ratio"] >= target else f"  below {target}"
                if not e["all_generated"]:
                    note += "  (some sequences stopped early)"
                print(f"{t:>7} {p:>3}  {mode:<9} {e['tps']:>9.1f} {ref:>9.1f} {e['ratio']:>6.3f}{note}")
    for t, s in results["threads"].items():
        g, bb, lb = s["gpt4all"], s["llama-batched-bench"], s["llama-bench"]
        if g["single_stream"]:
            ss = ", ".join(f"{mode} {e['tps']:.1f} ({e['ratio']:.3f})" for mode, e in g["single_stream"].items())
            print(f"threads {t}: one stream, tg{results['n_gen']} at depth {results['n_prompt']}: "
                  f"llama-bench {lb['tg']:.1f} tokens/s; gpt4all P=1 {ss}")
        pp = ", ".join(f"P={p} {g['P'][p]['blocking']['pp_tps']:.0f}/{bb['P'][p]['s_pp']:.0f}"
                       for p in map(str, results["parallel"]))
        print(f"threads {t}: prompts together, tokens/s gpt4all/S_PP: {pp}")
        print(f"threads {t}: peak RSS gpt4all {g['peak_rss_mb']:.0f} MB ({g['rss_open_mb']:.0f} MB resident with "
              f"{max(results['parallel'])} conversations open), llama-batched-bench {bb['peak_rss_mb']:.0f} MB; "
              f"gpt4all {g['version']} load {g['load_s'] * 1000:.0f} ms")
        print(f"threads {t}: CPU backend: gpt4all {g['cpu_variant']}, llama-batched-bench "
              f"{Path(bb['cpu_backend'] or '?').name} (flash attention {bb['flash_attn']}, kv_unified "
              f"{bb['kv_unified']})")
    print_contended(results)


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
    ap.add_argument("--threads", help="comma-separated thread counts (default 1,2; with --batched 2)")
    ap.add_argument("--n-prompt", type=int, default=128, help="prompt tokens for pp (default 128)")
    ap.add_argument("--n-gen", type=int, default=64, help="generated tokens for tg (default 64)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each contender (default 5)")
    ap.add_argument("--device", default="cpu",
                    help="gpt4all's device= (default cpu); anything else offloads every layer, for llama-bench "
                         "too (-ngl 999), which then runs on the build's GPU backend")
    ap.add_argument("--llama-bench", type=Path, default=BENCH_BUILD / "bin" / "llama-bench")
    ap.add_argument("--batched", action="store_true",
                    help="measure P conversations generating at once against llama-batched-bench instead")
    ap.add_argument("--parallel", default="1,2,4,8", help="with --batched: the P to measure (default 1,2,4,8)")
    ap.add_argument("--n-ctx", type=int, default=0,
                    help="with --batched: one sequence's context (default pp+tg rounded up to 256)")
    ap.add_argument("--llama-batched-bench", type=Path, default=BENCH_BUILD / "bin" / "llama-batched-bench")
    ap.add_argument("--library", type=Path, default=BENCH_BUILD / "bin",
                    help="the llmodel build gpt4all uses (default: the one beside llama-bench)")
    ap.add_argument("--build", action="store_true", help="configure and build build-bench/ first")
    ap.add_argument("--peer", action="append", default=[], metavar="KIND=PYTHON",
                    help="also measure a peer: original=PY (a Python with the original gpt4all package) or "
                         "llama-cpp-python=PY")
    ap.add_argument("--json", type=Path,
                    help="where to write the results (default benchmark.json; with --batched benchmark-batched.json)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()

    a.threads = a.threads or ("2" if a.batched else "1,2")
    if a.worker:
        a.threads = int(a.threads)
        print(json.dumps(WORKERS[a.worker](a)))
        return 0

    if a.build:
        build_llama_bench()
    tools = [(a.llama_bench, "--llama-bench")]
    if a.batched:
        tools.append((a.llama_batched_bench, "--llama-batched-bench"))
    for exe, option in tools:
        if not exe.exists():
            sys.exit(f"{exe} is missing: run with --build (or pass {option})")
    if a.batched and a.peer:
        sys.exit("--batched measures gpt4all alone: leave out --peer")
    a.json = a.json or ROOT / ("benchmark-batched.json" if a.batched else "benchmark.json")
    a.model = str(Path(a.model).resolve()) if a.model else default_model()
    # absolute: the llama tools run in their own folder
    a.llama_bench, a.llama_batched_bench, a.library = (a.llama_bench.resolve(), a.llama_batched_bench.resolve(),
                                                       a.library.resolve())
    threads = [int(t) for t in a.threads.split(",")]
    ours_env = dict(os.environ, GPT4ALL_LIBRARY=str(a.library),
                    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "python"), os.environ.get("PYTHONPATH")])))
    cpu_variant = llmodel_cpu_variant(a.library, ours_env)
    tools_variant = cpu_variant
    if cpu_variant == "native" and cpu_variant_files(a.llama_bench.parent):
        # gpt4all runs a build with one CPU backend linked in (--library), the tools a build with every variant:
        # they take the one the llmodel beside them picks, and the difference is said
        tools_variant = llmodel_cpu_variant(a.llama_bench.parent, ours_env) or cpu_variant
        print(f"warning: {a.library} is a native-only build, {a.llama_bench.parent} has CPU variants: the llama "
              f"tools run {tools_variant}, so the comparison is not like for like", file=sys.stderr)
    a.llama_bench = pin_cpu_variant(a.llama_bench, tools_variant)
    if a.batched:
        a.n_ctx = a.n_ctx or 256 * -(-(a.n_prompt + a.n_gen) // 256)  # one conversation's, as llama.cpp pads it
        results = measure_batched(a, threads, ours_env, tools_variant)
        results["contended"] = contended
        a.json.write_text(json.dumps(results, indent=2) + "\n")
        print_batched_table(results)
        print(f"\nfull results: {a.json}")
        return 0
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
                               "device": a.device,
                               "reps": a.reps, "llama_bench": str(a.llama_bench), "library": str(a.library),
                               "cpu_variant": cpu_variant, "tools_cpu_variant": tools_variant, "threads": {}}
    for t in threads:
        runs: Dict[str, List[Any]] = {"llama-bench pp": [], "llama-bench tg": [], "llama-bench rss": []}
        for name, *_ in contenders:
            runs[name] = []
        for rep in range(a.reps):
            order = rotated(["bench-pp", "bench-tg"] + [c[0] for c in contenders], rep)
            for item in order:
                if item == "bench-pp":
                    ts, rss = llama_bench(a.llama_bench, a.model, t, a.n_prompt, 0, device=a.device)
                    runs["llama-bench pp"].append(ts)
                    runs["llama-bench rss"].append(rss)
                elif item == "bench-tg":
                    ts, rss = llama_bench(a.llama_bench, a.model, t, 0, a.n_gen, device=a.device)
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
    results["contended"] = contended
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
          f"pp{results['n_prompt']}, tg{results['n_gen']}, median of {results['reps']}, "
          f"device {results.get('device', 'cpu')}")
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
    print_contended(results)


if __name__ == "__main__":
    sys.exit(main())
