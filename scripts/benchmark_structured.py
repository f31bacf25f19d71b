"""What a constraint costs: generation speed with a JSON schema, a tool call
and a GBNF grammar against unconstrained generation, same model, same
prompts, same threads, rounds interleaved so that the machine's drift falls
on every mode alike. A required tool call is compared with the same prompt
(the tools described in the system prompt) generated without a constraint.

usage: python scripts/benchmark_structured.py [--model PATH] [--threads N] [--rounds R]

Speed is generated tokens per second of generation time (prompt evaluation
excluded), summed over each mode's replies; the ratio is constrained over
unconstrained. Replies are sampled at the library's default temperature and,
separately, greedy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "scripts"))

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
        "married": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "hobbies", "married"],
}
LIST = r'''root ::= ("- " [A-Za-z] [a-z ,.]{0,60} "\n"){3,8}'''
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
PROMPTS = ["Describe a person who lives in a big city.", "Tell me about your best friend.",
           "Write a short profile of a famous scientist.", "Describe a character from a novel."]


def main() -> None:
    from fetch_models import ensure_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--threads", type=int, default=None, help="default: the library's (physical cores)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args()
    path = args.model or ensure_model("smollm2")

    from gpt4all import GPT4All

    model = GPT4All(path.name, model_path=path.parent, allow_download=False, n_threads=args.threads)
    modes = {
        "unconstrained": {},
        "json_schema": {"json_schema": PERSON},
        "gbnf list": {"grammar": LIST},
        "tools, free": {"tool": "none"},
        "tool call": {"tool": "required"},
    }
    for temp in (0.7, 0.0):
        rates: dict = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode, kw in modes.items():
                tokens, ms = 0, 0.0
                for i, prompt in enumerate(PROMPTS):
                    seed = 1000 * r + i
                    if kw.get("tool"):
                        with model.chat_session(tools=[WEATHER], tool_choice=kw["tool"]):
                            model.generate("What is the weather where " + prompt[0].lower() + prompt[1:],
                                           max_tokens=args.max_tokens, temp=temp, seed=seed)
                    else:
                        with model.chat_session():
                            model.generate(prompt, max_tokens=args.max_tokens, temp=temp, seed=seed, **kw)
                    st = model.last_generation
                    tokens += st.n_generated
                    ms += st.generate_ms
                rates[mode].append(tokens / ms * 1000)
        print(f"temp {temp}  ({path.name}, {model.model.thread_count()} threads, {args.rounds} rounds x "
              f"{len(PROMPTS)} replies)")
        for mode, values in rates.items():
            # a tool call is measured against the same prompt (tools in the system prompt) unconstrained
            base = statistics.median(rates["tools, free" if mode.startswith("tool") else "unconstrained"])
            med = statistics.median(values)
            print(f"  {mode:14s} {med:7.1f} tokens/s  ratio {med / base:.2f}")
    model.close()


if __name__ == "__main__":
    os.environ.setdefault("GPT4ALL_REGISTRY_URL", "")
    main()
