"""Downloading one file over HTTP(S), so that only a whole file becomes a model.

The body is written to ``NAME.part`` next to the target and renamed into
place only once it is known to be complete: its length was stated by the
server (``Content-Length``, ``Content-Range``, or a chunked body that ended
cleanly) or by the caller, and matched; and its hashes, when known, agree.
A body whose end cannot be told from a dropped connection (no length, no
chunking) with nothing to check it against is refused.

A partial file is continued with a range request only when the result can
be trusted: with ``If-Range`` and the validator (strong ETag or
Last-Modified) recorded when the file started, so that a changed file on the
server is sent whole instead of spliced; or when a hash will check the
result. Otherwise the download starts over.

Locks and that resume record live outside the model folder, in
`state_dir`, named by a hash of the target's path: the model folder holds
models and, while a download is incomplete, its ``NAME.part``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from . import errors

#: A download fails when fewer than LOW_SPEED_LIMIT bytes per second arrive
#: over LOW_SPEED_TIME seconds (as curl's --speed-limit/--speed-time); the
#: partial file is kept when it can be resumed.
LOW_SPEED_LIMIT = 1024
LOW_SPEED_TIME = 60.0
#: Tries per download: dropped connections, timeouts, a stale partial file.
ATTEMPTS = 5
_BLOCK = 1 << 16


@dataclass(frozen=True)
class Expected:
    """What the finished file must be: any of its size and hashes."""

    size: Optional[int] = None
    md5: Optional[str] = None
    sha256: Optional[str] = None

    @property
    def has_hash(self) -> bool:
        return bool(self.md5 or self.sha256)


class _Retry(Exception):
    """A transient failure: the next attempt may succeed, resuming if it can."""


class _Restart(Exception):
    """The partial file cannot be continued: drop it and start over."""


def state_dir() -> Path:
    """Where download locks and resume records live: the user cache's
    ``gpt4all-locks`` folder, beside (never inside) the default model folder."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("gpt4all-locks", appauthor=False))


def _state_base(target: Path) -> Path:
    key = hashlib.sha256(os.path.realpath(target).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return state_dir() / key


@contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """An exclusive lock between processes fetching the same target file.

    On POSIX the lock file is removed on release; a waiter that then holds
    the lock of a removed file notices and locks the current one instead.
    """
    lock = _state_base(target).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        import msvcrt

        with open(lock, "a+b") as f:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    while True:
        f = open(lock, "a+b")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(f.fileno()), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        f.close()  # the file was removed by the holder before us: lock the new one
    try:
        yield
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass
        f.close()  # releases the lock


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def discard_partial(target: Path) -> None:
    """Removes target's partial file and its resume record."""
    for p in (part_path(target), _state_base(target).with_suffix(".json")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _load_state(target: Path) -> Dict[str, Any]:
    try:
        state = json.loads(_state_base(target).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(target: Path, url: str, validator: Optional[str]) -> None:
    path = _state_base(target).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"target": str(target), "url": url, "validator": validator}), encoding="utf-8")


def _prune_records(min_age: float = 3600.0) -> None:
    """Drops resume records whose partial file is gone (deleted by hand, say)."""
    try:
        records = list(state_dir().glob("*.json"))
    except OSError:
        return
    now = time.time()
    for path in records:
        try:
            if now - path.stat().st_mtime < min_age:
                continue
            target = json.loads(path.read_text(encoding="utf-8")).get("target")
            if not isinstance(target, str) or not part_path(Path(target)).exists():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            continue


def _validator(headers: Any) -> Optional[str]:
    """The response's strong ETag, else its Last-Modified: what If-Range may send."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified") or None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def _content_range(value: Optional[str]) -> tuple:
    """(first byte, last byte, complete length) of a Content-Range; None where absent."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        return None, None, None
    first, last, total = m.groups()
    return (int(first) if first else None, int(last) if last else None,
            int(total) if total and total != "*" else None)


def _int_header(headers: Any, name: str) -> Optional[int]:
    value = (headers.get(name) or "").strip()
    return int(value) if re.fullmatch(r"[0-9]+", value) else None


class _SpeedGuard:
    """Fails a transfer that stays below LOW_SPEED_LIMIT bytes/s for LOW_SPEED_TIME s."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.count = 0

    def update(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed >= LOW_SPEED_TIME:
            if self.count < LOW_SPEED_LIMIT * elapsed:
                raise errors.DownloadError(
                    f"the transfer stayed below {LOW_SPEED_LIMIT} bytes/s for {elapsed:.0f} s "
                    f"({self.count} bytes arrived)")
            self.start, self.count = now, 0


def download(url: str, target: Path, expected: Expected, verbose: bool, timeout: float) -> None:
    """Downloads url into target; call it holding `file_lock` (target).

    Raises:
        DownloadError: whatever went wrong (network, HTTP, size or hash,
            disk); a partial file stays only if a later call can resume it.
    """
    _prune_records()
    try:
        _download(url, target, expected, verbose, timeout)
    except errors.GPT4AllError as e:
        kept = _keep_only_resumable(target, expected)
        raise errors.DownloadError(
            f"could not download {url}: {e}. "
            + ("The partial file is kept: trying again resumes it. " if kept else "")
            + "Check the network, or download the file yourself and pass model_path= to the folder that holds it."
        ) from e
    discard_partial(target)  # the resume record


def _download(url: str, target: Path, expected: Expected, verbose: bool, timeout: float) -> None:
    last: Optional[BaseException] = None
    for _ in range(ATTEMPTS):
        try:
            total, resumed = _attempt(url, target, expected, verbose, timeout)
            _check_complete(part_path(target), target.name, expected, total, resumed)
            return
        except _Restart as e:
            discard_partial(target)
            last = e
        except _Retry as e:
            last = e
    raise errors.DownloadError(f"{last} (after {ATTEMPTS} tries)")


def _keep_only_resumable(target: Path, expected: Expected) -> bool:
    """Keeps the partial file only if the next attempt could continue it."""
    part = part_path(target)
    if part.exists() and part.stat().st_size and (expected.has_hash or _load_state(target).get("validator")):
        return True
    discard_partial(target)
    return False


def _attempt(url: str, target: Path, expected: Expected, verbose: bool, timeout: float) -> Tuple[Optional[int], bool]:
    """One request: fetches what is missing into the partial file.

    Returns the file's complete length where the server states it, and
    whether the partial file was continued rather than started afresh.
    """
    import requests
    import urllib3

    try:
        return _transfer(url, target, expected, verbose, timeout)
    except (_Retry, _Restart, errors.GPT4AllError):
        raise
    except requests.exceptions.SSLError as e:
        raise errors.DownloadError(f"TLS failed: {e}") from e
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as e:
        raise _Retry(f"the connection failed: {e}") from e
    except requests.RequestException as e:  # TooManyRedirects, InvalidURL, InvalidSchema, ...
        raise errors.DownloadError(f"{type(e).__name__}: {e}") from e
    except urllib3.exceptions.HTTPError as e:
        raise errors.DownloadError(f"{type(e).__name__}: {e}") from e
    except OSError as e:
        raise errors.DownloadError(f"writing {part_path(target)} failed: {e}") from e


def _transfer(url: str, target: Path, expected: Expected, verbose: bool, timeout: float) -> Tuple[Optional[int], bool]:
    import requests

    part = part_path(target)
    offset, validator = _resume_point(url, target, expected)
    headers = {"Accept-Encoding": "identity"}  # ranges and lengths count the bytes of the file itself
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    with requests.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
        if r.status_code == 416 and offset:
            _, _, total = _content_range(r.headers.get("Content-Range"))
            whole = expected.size if expected.size is not None else total
            if whole == offset:
                return whole, True  # the partial file already holds everything: check it
            raise _Restart(f"the server refused to resume at byte {offset} (HTTP 416)")
        offset, total = _body_start(r, url, target, offset, expected)
        _check_disk_space(target.parent, (total if total is not None else expected.size or 0) - offset)
        received = _receive(r, part, offset, total, verbose, target.name)
        length = _int_header(r.headers, "Content-Length")
        if length is not None and received < length:
            raise _Retry(f"the connection closed after {offset + received} of {offset + length} bytes")
        if total is None and "chunked" in r.headers.get("Transfer-Encoding", "").lower():
            total = offset + received  # a chunked body that ended with its last chunk is whole
    return total, offset > 0


def _resume_point(url: str, target: Path, expected: Expected) -> Tuple[int, Optional[str]]:
    """Where to continue the partial file, and the validator to send; (0, None) to start over."""
    part = part_path(target)
    offset = part.stat().st_size if part.exists() else 0
    state = _load_state(target) if offset else {}
    validator = state.get("validator") if state.get("url") == url else None
    if not isinstance(validator, str):
        validator = None
    too_long = expected.size is not None and offset > expected.size
    if offset and not too_long and (validator or expected.has_hash):
        return offset, validator
    discard_partial(target)  # nothing would show a spliced result: start over
    return 0, None


def _body_start(r: Any, url: str, target: Path, offset: int, expected: Expected) -> Tuple[int, Optional[int]]:
    """Where the response's body goes in the file, and the file's whole length if stated."""
    if r.status_code >= 500:
        raise _Retry(f"HTTP {r.status_code} {r.reason}")
    if r.status_code not in (200, 206):
        raise errors.DownloadError(f"HTTP {r.status_code} {r.reason}")
    encoding = r.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise errors.DownloadError(f"the server sent {encoding}-encoded content, not the file itself")
    length = _int_header(r.headers, "Content-Length")
    if r.status_code == 200:
        offset = 0  # a whole body: the file changed (If-Range did not match) or ranges are not supported
        total = length
        _save_state(target, url, _validator(r.headers))
    elif not offset:
        raise _Restart("the server sent a part of the file that was not asked for")
    else:
        first, last, total = _content_range(r.headers.get("Content-Range"))
        if first != offset:
            raise _Restart(f"the server resumed at byte {first}, not {offset}")
        if total is None and last is not None:
            total = last + 1
    if total is None and length is not None:
        total = offset + length
    if expected.size is not None and total is not None and total != expected.size:
        if offset:
            raise _Restart(f"the file on the server is now {total} bytes")
        raise errors.DownloadError(f"the server's file is {total} bytes, expected {expected.size}")
    return offset, total


def _receive(r: Any, part: Path, offset: int, total: Optional[int], verbose: bool, name: str) -> int:
    """Appends the response body to part at offset; returns the bytes received."""
    # read1 returns what has arrived, so the speed guard runs however slowly
    # bytes drip in (urllib3 1.x lacks it: whole blocks there)
    read1 = getattr(r.raw, "read1", None)
    chunks = iter(lambda: read1(_BLOCK, decode_content=True), b"") if read1 else r.iter_content(_BLOCK)
    bar = _progress(total, offset, name) if verbose else None
    guard = _SpeedGuard()
    received = 0
    try:
        with open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            try:
                for chunk in chunks:
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    guard.update(len(chunk))
            finally:
                out.flush()
                os.fsync(out.fileno())
    finally:
        if bar is not None:
            bar.close()
    return received


def _check_complete(part: Path, name: str, expected: Expected, total: Optional[int], resumed: bool) -> None:
    """Checks the partial file is the whole file, then renames it into place.

    A mismatch after a resume starts the file over; after a whole download
    it is an error (the file on the server is not the one expected).
    """
    size = part.stat().st_size
    whole = expected.size if expected.size is not None else total
    if whole is not None and size < whole:
        raise _Retry(f"got {size} of {whole} bytes")
    problem = None
    if whole is None and not expected.has_hash:
        problem = (f"the server sent {name} without a length, and no size or hash is known, so a dropped "
                   f"connection cannot be told from the end of the file; pass expected_size= or expected_sha256=")
    elif whole is not None and size != whole:
        problem = f"got {size} bytes, expected {whole}"
    else:
        for algo, want in (("sha256", expected.sha256), ("md5", expected.md5)):
            if want and hash_file(part, algo) != want.lower():
                problem = (f"the {algo} of {name} does not match the expected {want} (a corrupt download or a "
                           f"changed file on the server); the file was removed")
                break
    if problem is not None:
        if resumed:
            raise _Restart(problem)
        part.unlink()
        raise errors.DownloadError(problem)
    os.replace(part, part.with_name(name))


def hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_disk_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > 0 and free < needed:
        raise errors.DownloadError(f"not enough disk space in {folder}: {needed} bytes needed, {free} free")


def _progress(total: Optional[int], initial: int, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
