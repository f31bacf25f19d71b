"""Fixtures: the real test models (fetched and cached by scripts/fetch_models.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from fetch_models import ensure_model  # noqa: E402

if "GPT4ALL_LIBRARY" not in os.environ and (ROOT / "build" / "bin").is_dir():
    os.environ["GPT4ALL_LIBRARY"] = str(ROOT / "build" / "bin")
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT / "python"), os.environ.get("PYTHONPATH")]))
os.environ["PYTHONPATH"] = PYTHONPATH
# The remote models registry is a network call: tests that want one name a local server.
os.environ.setdefault("GPT4ALL_REGISTRY_URL", "")
sys.path.insert(0, str(ROOT / "python"))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return ensure_model("smollm2")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return ensure_model("gemma3")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2, converted to GGUF f16 from its Hugging Face weights."""
    return ensure_model("minilm")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from gpt4all import GPT4All

    model = GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False)
    yield model
    model.close()


def run_python(code: str, env_extra: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (so a crash cannot take the test run down)."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


# The CUDA tests need an NVIDIA GPU and a CUDA build (scripts/gpu_device_check.sh);
# CI machines have neither, so the file is collected only where one is named.
collect_ignore = [] if os.environ.get("GPT4ALL_CUDA_LIBRARY") else ["test_gpu_cuda.py"]
