#!/usr/bin/env python3
"""Server throughput: ``gpt4all serve`` against llama.cpp's ``llama-server``
from the same tree, same model, threads and ``--parallel``, driven by the
same client, alternating.

    python scripts/benchmark_server.py --build       # once: build-server/ with llama-server
    python scripts/benchmark_server.py [--clients 1,4,8] [--requests 4] [--max-tokens 64] [--reps 3]
                                       [--peer PYTHON]

--peer: a Python with llama-cpp-python[server] installed; its server
(``python -m llama_cpp.server``, the one users of llama-cpp-python pick) is
measured too, with the same model, threads and context. One way to make it,
from the sdist fetch_llama_cpp.py caches (about 10 minutes on 2 cores):

    python3 -m venv /tmp/lcp
    CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
        -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DLLAMA_OPENSSL=OFF" \
        /tmp/lcp/bin/pip install "$HOME/.cache/gpt4all-dev/archives/llama_cpp_python-0.3.36.tar.gz[server]"
    python scripts/benchmark_server.py --peer /tmp/lcp/bin/python

Each client sends its requests one after another: streaming chat
completions, greedy, with the end-of-generation tokens banned through
``logit_bias`` so that every reply is exactly --max-tokens long on both
servers. Reported per level: aggregate completion tokens/s (all tokens over
the level's wall time), and the median time to first token.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from fetch_models import ensure_model  # noqa: E402

SERVER_BUILD = ROOT / "build-server"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" if os.uname().machine == "x86_64" else ""
PROMPTS = ["Write a story about a lighthouse keeper.", "Explain how bread rises.", "Describe a walk in a forest.",
           "Tell me about the history of maps.", "Write a letter to a friend about summer.",
           "Explain why the sky is blue.", "Describe a busy market.", "Write a poem about rain."]


def build() -> None:
    from fetch_llama_cpp import ensure_tree

    tree = ensure_tree()
    subprocess.run(["cmake", "-S", str(tree), "-B", str(SERVER_BUILD), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF",
                    "-DLLAMA_BUILD_HTML=OFF",  # no web UI (it would be downloaded)
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_NATIVE=ON",
                    # as llmodel's own build: this llama.cpp's AMX kernels die with SIGILL
                    f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"], check=True)
    subprocess.run(["cmake", "--build", str(SERVER_BUILD), "-j", str(os.cpu_count() or 2), "--target",
                    "llama-server"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")  # llama-cpp-python has no /health
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready")


MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def one_request(port: int, prompt: str, max_tokens: int, bias: dict) -> tuple:
    """(time to first token, completion tokens, seconds) of one streamed chat completion."""
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "logit_bias": bias, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:500]!r}")
    ttft = None
    tokens = 0
    pieces = 0  # content chunks: the count where a server sends no usage (llama-cpp-python)
    while True:
        line = r.readline()
        if not line:
            break
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
            pieces += 1
            if ttft is None:
                ttft = time.perf_counter() - t0
    conn.close()
    return ttft or 0.0, tokens or pieces, time.perf_counter() - t0


def level(port: int, clients: int, requests: int, max_tokens: int, bias: dict) -> dict:
    results: list = []
    lock = threading.Lock()

    failures: list = []

    def client(k: int) -> None:
        try:
            for j in range(requests):
                r = one_request(port, PROMPTS[(k + j) % len(PROMPTS)], max_tokens, bias)
                with lock:
                    results.append(r)
        except BaseException as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"a client failed: {failures[0]!r}")
    tokens = sum(r[1] for r in results)
    if tokens != clients * requests * max_tokens:  # a server that merges pieces sends fewer chunks
        print(f"note: {tokens} tokens counted, {clients * requests * max_tokens} asked for", file=sys.stderr)
    return {"tokens_per_s": tokens / wall, "ttft_ms": statistics.median(r[0] for r in results) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="store_true", help="build llama-server into build-server/ first")
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests", type=int, default=4, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context per conversation")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--peer", help="a Python with llama-cpp-python[server]: measure its server too")
    args = ap.parse_args()
    if args.build:
        build()
    llama_server = SERVER_BUILD / "bin" / "llama-server"
    if not llama_server.is_file():
        raise SystemExit(f"{llama_server} is missing: run with --build")
    model = ensure_model("smollm2")
    levels = [int(x) for x in args.clients.split(",")]
    parallel = max(levels)

    sys.path.insert(0, str(ROOT / "python"))
    from gpt4all._pyllmodel import LLModel

    m = LLModel(model, n_ctx=64, n_parallel=1)
    banned = {t for t in (m.info.eos, m.info.eot) if t is not None and t >= 0}
    m.close()
    bias = {str(t): -100 for t in banned}

    ports = {"gpt4all": free_port(), "llama-server": free_port(), "llama-cpp-python": free_port()}
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    env.setdefault("GPT4ALL_LIBRARY", str(ROOT / "build" / "bin"))
    procs = {
        "gpt4all": subprocess.Popen([sys.executable, "-m", "gpt4all", "serve", model.name, "--model-path",
                                     str(model.parent), "--offline", "--port", str(ports["gpt4all"]),
                                     "--parallel", str(parallel), "--threads", str(args.threads),
                                     "--n-ctx", str(args.n_ctx), "--queue", "1000"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        # a cache per slot, as llmodel keeps one per conversation
        "llama-server": subprocess.Popen([str(llama_server), "-m", str(model), "--port", str(ports["llama-server"]),
                                          "-np", str(parallel), "-t", str(args.threads), "-tb", str(args.threads),
                                          "-c", str(args.n_ctx * parallel), "--no-kv-unified", "--no-webui"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    if args.peer:
        procs["llama-cpp-python"] = subprocess.Popen(
            [args.peer, "-m", "llama_cpp.server", "--model", str(model), "--port", str(ports["llama-cpp-python"]),
             "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", str(args.n_ctx),
             "--model_alias", MODEL_NAME,
             # queue concurrent requests (its default interrupts the running stream for a new one)
             "--interrupt_requests", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for name, proc in procs.items():
            wait_ready(ports[name], proc)
        runs: dict = {name: {c: [] for c in levels} for name in procs}
        for name in procs:  # warm: caches grown, pages touched
            level(ports[name], parallel, 1, 8, bias)
        for rep in range(args.reps):
            for c in levels:
                for name in procs:
                    r = level(ports[name], c, args.requests, args.max_tokens, bias)
                    runs[name][c].append(r)
                    print(f"rep {rep} clients {c}: {name} {r['tokens_per_s']:.1f} tok/s, "
                          f"ttft {r['ttft_ms']:.0f} ms", file=sys.stderr)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"\nSmolLM2 Q4_1, {args.threads} threads, --parallel {parallel}, {args.max_tokens} tokens per reply, "
          f"{args.requests} requests per client, median of {args.reps}")
    print(f"{'clients':>7} {'gpt4all t/s':>12} {'llama-server t/s':>17} {'ratio':>6} {'gpt4all ttft':>13} "
          f"{'llama-server ttft':>18}" + ("  llama-cpp-python t/s, ttft" if args.peer else ""))
    summary = {}
    for c in levels:
        ours = statistics.median(r["tokens_per_s"] for r in runs["gpt4all"][c])
        ref = statistics.median(r["tokens_per_s"] for r in runs["llama-server"][c])
        ratio = statistics.median(a["tokens_per_s"] / b["tokens_per_s"]
                                  for a, b in zip(runs["gpt4all"][c], runs["llama-server"][c]))
        t_ours = statistics.median(r["ttft_ms"] for r in runs["gpt4all"][c])
        t_ref = statistics.median(r["ttft_ms"] for r in runs["llama-server"][c])
        summary[c] = {"gpt4all": ours, "llama-server": ref, "ratio": ratio, "ttft_ms": [t_ours, t_ref]}
        line = f"{c:>7} {ours:>12.1f} {ref:>17.1f} {ratio:>6.2f} {t_ours:>10.0f} ms {t_ref:>15.0f} ms"
        if args.peer:
            peer = statistics.median(r["tokens_per_s"] for r in runs["llama-cpp-python"][c])
            t_peer = statistics.median(r["ttft_ms"] for r in runs["llama-cpp-python"][c])
            summary[c]["llama-cpp-python"] = {"tokens_per_s": peer, "ttft_ms": t_peer}
            line += f"  {peer:.1f}, {t_peer:.0f} ms"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
