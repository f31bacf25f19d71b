#!/usr/bin/env bash
# Sets everything up on a fresh machine and generates text with the default
# model: a virtual environment, `pip install .` (builds llama.cpp and our
# backend), then the default model fetched into ~/.cache/gpt4all on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check .
.venv/bin/python - <<'PY'
from gpt4all import GPT4All

model = GPT4All("SmolLM2-135M-Instruct.Q4_1.gguf")
print(model.generate("The capital of France is", max_tokens=40))
PY
