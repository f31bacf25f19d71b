"""The models registry: the bundled entries, what a remote registry may and may not change,
and the keys programs written for the original catalogue read."""
from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading

import pytest

from gpt4all import DownloadError, InvalidArgumentError
from gpt4all.models import default_model, fetch, find_entry, list_models, registry

ENTRIES = registry()
# exact "name==version" requirements, plain relative paths inside the wheel
REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9.]*")
MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")

# every key of the original catalogue's entries, and its type there
ORIGINAL_KEYS = {"order": str, "md5sum": str, "name": str, "filename": str, "filesize": str, "requires": str,
                 "ramrequired": str, "parameters": str, "quant": str, "type": str, "description": str}


def check_original_keys(entry, *, md5_known=True):
    """The keys a program written for the original catalogue reads, with their types."""
    where = entry.get("filename")
    for key, kind in ORIGINAL_KEYS.items():
        if key == "md5sum" and not md5_known:
            continue
        assert isinstance(entry.get(key), kind), f"{where}: {key} is {entry.get(key)!r}"
    assert entry["filesize"].isdigit() and int(entry["filesize"]) > 0, where
    assert re.fullmatch(r"[0-9a-f]{32}", entry["md5sum"]), where
    urls = [s["url"] for s in entry["sources"] if "url" in s]
    if urls:
        assert entry["url"] == urls[0], where
    else:
        assert "url" not in entry, where
    for key in ("promptTemplate", "systemPrompt"):
        assert isinstance(entry.get(key, ""), str), f"{where}: {key}"
    assert "%1" in entry.get("promptTemplate", "%1"), where  # the original's form, not "{0}"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["filename"] for e in ENTRIES])
def test_entry_is_complete(entry):
    check_original_keys(entry)
    for key in ("name", "filename", "description", "parameters", "quant", "type", "ramrequired", "sources"):
        assert entry.get(key), f"{entry['filename']}: {key} is missing"
    assert entry["filename"].endswith(".gguf")
    if "sha256sum" in entry:
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256sum"])
    for source in entry["sources"]:
        if "url" in source:
            # Hugging Face, or the original's own host for the models its catalogue names
            assert source["url"].startswith(("https://huggingface.co/", "https://gpt4all.io/models/gguf/")), source
            assert source["url"].endswith("/" + entry["filename"])
        else:
            for piece in source["packages"]:
                assert REQUIREMENT.fullmatch(piece["package"]), piece
                assert MEMBER.fullmatch(piece["member"]) and ".." not in piece["member"], piece


def test_the_test_models_sizes_and_hashes_match_the_real_files(smollm2_path, gemma_path):
    import hashlib

    for path in (smollm2_path, gemma_path):
        entry = find_entry(path.name)
        assert int(entry["filesize"]) == path.stat().st_size
        md5, sha = hashlib.md5(), hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                md5.update(block)
                sha.update(block)
        assert (entry["md5sum"], entry["sha256sum"]) == (md5.hexdigest(), sha.hexdigest())


def test_names_are_unique_and_the_default_is_smollm2():
    assert len({e["filename"].lower() for e in ENTRIES}) == len(ENTRIES)
    assert len({e["name"].lower() for e in ENTRIES}) == len(ENTRIES)
    assert [e["filename"] for e in ENTRIES if e.get("default")] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert default_model()["filename"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_lookup_by_file_name_name_or_stem():
    for key in ("Llama-3.2-1B-Instruct-Q4_0.gguf", "llama 3.2 1b instruct", "Llama-3.2-1B-Instruct-Q4_0"):
        assert find_entry(key)["filename"] == "Llama-3.2-1B-Instruct-Q4_0.gguf"
    assert find_entry("no such model") is None


def test_a_bundled_model_s_config_is_the_original_s():
    from gpt4all.models import model_config

    llama = model_config(find_entry("Llama 3.2 1B Instruct"))
    assert llama["promptTemplate"] == ("<|start_header_id|>user<|end_header_id|>\n\n{0}<|eot_id|>"
                                       "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "systemPrompt" not in llama  # pre-formatted for the original: the chat template formats it here
    assert llama["url"] == llama["sources"][0]["url"]


# ------------------------------------------------------------------ a remote registry

SERVED: dict = {}


class Handler(http.server.BaseHTTPRequestHandler):
    requests_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.requests_seen.append(self.path)
        body = json.dumps(SERVED.get(self.path)).encode() if self.path in SERVED else None
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


EVIL_PACKAGES = [{"packages": [{"package": "evil==1.0", "member": "evil/m.gguf"}]},
                 {"packages": [{"package": "-r/etc/passwd", "member": "x"}]},
                 {"packages": [{"package": "evil @ https://example.com/evil-1.0.tar.gz", "member": "x"}]}]


def original_entry(filename, **extra):
    """An entry as the original catalogue writes them."""
    return {"order": "z", "md5sum": "0" * 32, "name": filename.title(), "filename": filename, "filesize": "1000",
            "requires": "3.0.0", "ramrequired": "8", "parameters": "7 billion", "quant": "q4_0", "type": "Mistral",
            "description": "<ul><li>remote</li></ul>", "url": f"https://example.com/{filename}",
            "promptTemplate": "<|im_start|>user\n%1<|im_end|>\n<|im_start|>assistant\n%2<|im_end|>\n",
            "systemPrompt": "", **extra}


def test_every_listed_entry_has_the_original_s_keys(server):
    SERVED["/models3.json"] = [original_entry("remote-a.gguf"), original_entry("remote-b.gguf", chatTemplate=None)]
    models = list_models(url=server + "/models3.json", timeout=5)
    assert [m["filename"] for m in models[-2:]] == ["remote-a.gguf", "remote-b.gguf"]
    for entry in models:
        check_original_keys(entry)
    assert models[-1]["url"] == "https://example.com/remote-b.gguf"
    assert "chatTemplate" not in models[-1]  # null in the catalogue: no template
    for entry in list_models(url=""):
        check_original_keys(entry)


def test_a_remote_registry_cannot_change_a_bundled_model_s_file(server):
    smol = dict(next(e for e in ENTRIES if e.get("default")))
    SERVED["/hijack.json"] = [{**original_entry(smol["filename"]), "sha256sum": "1" * 64, "default": False,
                               "sources": EVIL_PACKAGES, "description": "new words"}]
    merged = {m["filename"]: m for m in list_models(url=server + "/hijack.json", timeout=5)}[smol["filename"]]
    assert merged["description"] == "new words"  # details may change
    for key in ("md5sum", "sha256sum", "filesize", "sources", "default"):
        assert merged[key] == smol[key], key
    assert "url" not in merged


def test_a_remote_registry_never_names_packages_for_pip(server):
    SERVED["/evil.json"] = [original_entry("evil.gguf", sources=EVIL_PACKAGES + [{"url": "https://example.com/e"}]),
                            {"filename": "evil2.gguf", "sources": EVIL_PACKAGES}]
    merged = {m["filename"]: m for m in list_models(url=server + "/evil.json", timeout=5)}
    assert merged["evil.gguf"]["sources"] == [{"url": "https://example.com/e"}]
    assert merged["evil2.gguf"]["sources"] == []


@pytest.mark.parametrize("source, reason", list(zip(EVIL_PACKAGES, [
    "package sources are taken only from the registry bundled with gpt4all",
    "sources[0].packages[0].package must be an exact 'name==version', got '-r/etc/passwd'",
    "sources[0].packages[0].package must be an exact 'name==version', got 'evil @ https:"])),
    ids=["unbundled", "option", "direct-url"])
def test_package_sources_outside_the_bundled_registry_never_reach_pip(server, tmp_path, monkeypatch, source, reason):
    monkeypatch.setenv("PIP_INDEX_URL", server + "/simple/")  # pip, were it run, would ask here
    Handler.requests_seen.clear()
    entry = {"filename": "evil.gguf", "sources": [source]}
    with pytest.raises(DownloadError, match="could not fetch evil.gguf") as info:
        fetch(entry, tmp_path)
    assert reason in str(info.value)
    assert Handler.requests_seen == []
    assert list(tmp_path.iterdir()) == []


def test_a_requirement_is_never_read_as_a_pip_option(tmp_path):
    from gpt4all.models import _pip_download

    r = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if r.returncode != 0:
        pytest.skip("no pip in this interpreter")
    with pytest.raises(DownloadError, match="Invalid requirement"):
        _pip_download("-r/etc/passwd", tmp_path, verbose=False)  # an option would read the file


def test_a_malformed_remote_entry_is_named_when_fetched(server, tmp_path):
    SERVED["/odd.json"] = [original_entry("odd.gguf", filesize="huge")]
    entry = {m["filename"]: m for m in list_models(url=server + "/odd.json", timeout=5)}["odd.gguf"]
    with pytest.raises(InvalidArgumentError, match="'odd.gguf': 'filesize' must be a number of bytes"):
        fetch(entry, tmp_path)


# ------------------------------------------------------------ the model folder

def test_models_py_does_not_import_gpt4all_py():
    """The folder helpers live in models.py; gpt4all.py imports models, never the other way."""
    import ast

    import gpt4all.models

    tree = ast.parse(open(gpt4all.models.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
            imported.update(("." * node.level) + (node.module or "") + "." + a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {name for name in imported if name in (".gpt4all", "..gpt4all", "gpt4all.gpt4all")}, imported


def test_the_folder_helpers_are_still_found_in_gpt4all_gpt4all():
    import gpt4all.models as models
    from gpt4all.gpt4all import DEFAULT_MODEL_DIR_ENV, append_extension_if_missing, default_model_dir

    assert default_model_dir is models.default_model_dir
    assert append_extension_if_missing is models.append_extension_if_missing
    assert DEFAULT_MODEL_DIR_ENV == "GPT4ALL_MODEL_PATH"
    assert append_extension_if_missing("a") == "a.gguf" and append_extension_if_missing("a.bin") == "a.bin"
    # and importing the package still does not load models.py (nor requests)
    r = subprocess.run([sys.executable, "-c", "import sys, gpt4all; print('gpt4all.models' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr


def test_an_assigned_default_model_directory_wins_everywhere(tmp_path, monkeypatch):
    """`gpt4all.gpt4all.DEFAULT_MODEL_DIRECTORY = path`, as the original documents, moves the model
    folder for every lookup (models.py reads the assignment without importing gpt4all.py)."""
    import gpt4all.gpt4all as module
    import gpt4all.models as models
    from gpt4all import ModelNotFoundError

    monkeypatch.setenv("GPT4ALL_MODEL_PATH", str(tmp_path / "from-env"))
    assert module.DEFAULT_MODEL_DIRECTORY == models.DEFAULT_MODEL_DIRECTORY == tmp_path / "from-env"
    monkeypatch.setattr(module, "DEFAULT_MODEL_DIRECTORY", str(tmp_path / "assigned"), raising=False)
    for read in (module.default_model_dir, models.default_model_dir, lambda: models.DEFAULT_MODEL_DIRECTORY):
        assert read() == tmp_path / "assigned"
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "assigned" / "absent.gguf")):
        models.retrieve_model("absent", allow_download=False)
    # assigned in models.py as well: gpt4all.gpt4all's, the documented one, wins
    monkeypatch.setattr(models, "DEFAULT_MODEL_DIRECTORY", tmp_path / "in-models", raising=False)
    assert models.default_model_dir() == tmp_path / "assigned"
    monkeypatch.delattr(module, "DEFAULT_MODEL_DIRECTORY")
    assert module.DEFAULT_MODEL_DIRECTORY == module.default_model_dir() == tmp_path / "in-models"
