"""A griffe extension for the API reference (mkdocs.yml loads it).

``GPT4All.generate`` takes its sampling defaults from the one definition in
``gpt4all._params`` (``temp: float = GenerationParams.temp``). Griffe reads
the source, so the reference would show that expression; this extension
shows its value instead (``temp: float = 0.7``), as ``help()`` does.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from gpt4all._params import GenerationParams  # noqa: E402

PREFIX = "GenerationParams."


class GenerationDefaults(griffe.Extension):
    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        for param in func.parameters:
            text = "" if param.default is None else str(param.default)
            if text.startswith(PREFIX):
                param.default = repr(getattr(GenerationParams, text[len(PREFIX):]))
