#!/usr/bin/env python3
"""How often does a batched greedy reply differ from the same reply alone?

    GPT4ALL_LIBRARY=build/bin .venv/bin/python scripts/batch_agreement.py [--model M] [--parallel 8]

Conversations that generate at the same time share one cache pool and one
llama_decode per step; the engine then adds the same numbers in another
order (a row of attention covers the other conversations' cells, masked),
so a greedy choice between two nearly equal logits can go the other way.
This measures it: each prompt's greedy reply on a fresh model, alone, next
to its reply when `--parallel` prompts run at once on one model. It prints
how many replies are identical and, for the others, where they part.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from gpt4all._pyllmodel import LLModel  # noqa: E402

SUBJECTS = ["the sea", "a lighthouse", "bread", "the moon", "chess", "rain", "a violin", "mountains",
            "trains", "coffee", "a library", "winter", "bees", "the desert", "clocks", "a garden"]
FORMS = ["Write one sentence about {}.", "Here is a short story about {}:", "Three facts about {}: 1.",
         "Q: What do you know about {}?\nA:"]


def prompts(n: int) -> list:
    out = [f.format(s) for f in FORMS for s in SUBJECTS]
    return out[:n]


def reply(conv, prompt: str, n: int) -> list:
    toks: list = []
    conv.generate(prompt, on_token=lambda t, s: toks.append(t) or True, temp=0, n_predict=n, special=False)
    return toks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/gpt4all-dev/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    texts = prompts(a.prompts)

    solo = []
    with LLModel(a.model, n_ctx=512, n_threads=a.threads, n_parallel=1) as m:
        for p in texts:
            c = m.conversation()
            solo.append(reply(c, p, a.tokens))
            c.close()  # the next prompt runs alone in the pool, as on a fresh model

    together: list = [None] * len(texts)
    with LLModel(a.model, n_ctx=512, n_threads=a.threads, n_parallel=a.parallel) as m:
        for start in range(0, len(texts), a.parallel):
            group = range(start, min(start + a.parallel, len(texts)))
            convs = {i: m.conversation() for i in group}
            barrier = threading.Barrier(len(group))

            def work(i: int) -> None:
                barrier.wait()
                together[i] = reply(convs[i], texts[i], a.tokens)

            threads = [threading.Thread(target=work, args=(i,)) for i in group]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in convs.values():
                c.close()

    same = 0
    parts = []
    for s, t in zip(solo, together):
        if s == t:
            same += 1
            continue
        k = 0
        while k < min(len(s), len(t)) and s[k] == t[k]:
            k += 1
        parts.append(k)
    print(f"{same} of {len(texts)} batched replies ({a.parallel} at once, {a.tokens} greedy tokens) equal "
          f"their solo reply")
    if parts:
        print(f"the others part from it after {sorted(parts)} tokens (mean {sum(parts) / len(parts):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
