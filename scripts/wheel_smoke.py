#!/usr/bin/env python3
"""Checks an installed gpt4all: its own native library loads, the default model generates.

Run by cibuildwheel on each wheel it builds and by tests/test_packaging.py on
the wheel and sdist built here. The default model comes from
$GPT4ALL_MODEL_PATH when it holds one, else it is fetched.
"""
import os
import sys
import time
from pathlib import Path

t0 = time.perf_counter()
import gpt4all  # noqa: E402
from gpt4all import GPT4All, _native  # noqa: E402
from gpt4all._pyllmodel import cpu_variant  # noqa: E402
from gpt4all.models import default_model  # noqa: E402

import_ms = (time.perf_counter() - t0) * 1000
assert "GPT4ALL_LIBRARY" not in os.environ, "unset GPT4ALL_LIBRARY: this checks the package's own library"
package_dir = Path(gpt4all.__file__).resolve().parent
with GPT4All(default_model()["filename"]) as model:
    library = Path(_native.lib()._name).resolve()
    assert library.parent == package_dir / "lib", f"loaded {library}, not the package's own library"
    text = model.generate("The capital of France is", max_tokens=8, temp=0)
print(f"gpt4all {gpt4all.__version__} from {package_dir}")
print(f"library {library.name}, CPU variant {cpu_variant()}")
print(f"import {import_ms:.0f} ms; generated: {text!r}")
if "Paris" not in text:
    sys.exit(f"unexpected generation: {text!r}")
