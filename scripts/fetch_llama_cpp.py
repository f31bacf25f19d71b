#!/usr/bin/env python3
"""Fetch the pinned llama.cpp source tree into a local cache, outside git.

The tree comes from the source distribution of ``llama-cpp-python``, which
vendors llama.cpp at ``vendor/llama.cpp``. The archive is fetched with pip (no
hard-coded URLs), its sha256 is checked, and only the llama.cpp tree is
unpacked. A cache that is already complete is left alone, so running this
again is free and needs no network.

Prints the path of the tree on stdout (the last line), for CMake's
``-DLLAMA_CPP_DIR=``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def _load_pip_finder():
    """python/gpt4all/_pip.py, loaded by path: the package may not be importable here."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "python" / "gpt4all" / "_pip.py"
    spec = importlib.util.spec_from_file_location("_gpt4all_pip", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pip_command


pip_command = _load_pip_finder()

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
ARCHIVE = f"llama_cpp_python-{VERSION}.tar.gz"
TREE_PREFIX = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
MARKER = ".gpt4all-tree-complete"


def cache_root() -> Path:
    """Where build inputs are cached: $GPT4ALL_DEV_CACHE, else the user cache."""
    env = os.environ.get("GPT4ALL_DEV_CACHE")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gpt4all-dev"


def default_tree_dir() -> Path:
    return cache_root() / f"llama.cpp-{VERSION}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_archive(dest_dir: Path) -> Path:
    """Return a verified copy of the sdist in dest_dir, downloading it if needed."""
    archive = dest_dir / ARCHIVE
    if archive.is_file() and sha256_of(archive) == SHA256:
        return archive
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        # Only this package from source; its build requirements may be wheels
        # (pip prepares the sdist's metadata, which needs them).
        # inside pip's isolated build environment `python -m pip` does not exist
        cmd = [*pip_command(), "download", "--no-deps",
               "--no-binary", PACKAGE, "--dest", tmp, f"{PACKAGE}=={VERSION}"]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        got = Path(tmp) / ARCHIVE
        if not got.is_file():
            raise SystemExit(f"pip did not produce {ARCHIVE} in {tmp}")
        digest = sha256_of(got)
        if digest != SHA256:
            raise SystemExit(f"sha256 mismatch for {ARCHIVE}: got {digest}, expected {SHA256}")
        os.replace(got, archive)
    return archive


def unpack_tree(archive: Path, tree_dir: Path) -> None:
    """Unpack vendor/llama.cpp from the archive into tree_dir, atomically."""
    staging = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=tree_dir.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(TREE_PREFIX):
                    continue
                m.name = m.name[len(TREE_PREFIX):]
                if not m.name or m.name == ".git" or m.name.startswith(".git/"):
                    continue  # a submodule's .git pointer would make git commands fail in the tree
                members.append(m)
            if not members:
                raise SystemExit(f"{archive} holds no {TREE_PREFIX}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **kwargs)
        (staging / MARKER).write_text(SHA256 + "\n")
        if tree_dir.exists():
            shutil.rmtree(tree_dir)
        os.replace(staging, tree_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def tree_is_complete(tree_dir: Path) -> bool:
    marker = tree_dir / MARKER
    return marker.is_file() and marker.read_text().strip() == SHA256


def ensure_tree(tree_dir: Path | None = None) -> Path:
    tree_dir = tree_dir or default_tree_dir()
    if tree_is_complete(tree_dir):
        return tree_dir
    tree_dir.parent.mkdir(parents=True, exist_ok=True)
    archive = fetch_archive(cache_root() / "archives")
    unpack_tree(archive, tree_dir)
    return tree_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None,
                    help=f"where to put the tree (default: {default_tree_dir()})")
    args = ap.parse_args()
    print(ensure_tree(args.dest))


if __name__ == "__main__":
    main()
