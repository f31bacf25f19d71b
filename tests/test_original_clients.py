"""Programs written for the original gpt4all package (PyPI ``gpt4all`` 2.8.2)
run on this one, unchanged, installed from the package index:

- ``llm`` with its ``llm-gpt4all`` plugin lists the installed model and
  generates with it;
- LangChain's ``langchain_community.llms.GPT4All`` wrapper invokes and
  streams, and its ``GPT4AllEmbeddings`` embeds documents and queries;
- the original project's own tests (shipped inside its 2.8.2 wheel, fetched
  at test time, never copied here) pass against this package.

This package is built once as a (native-only) wheel and installed into a fresh
virtual environment; then the clients are installed into it from the package
index, and pip must keep this package (2.9.0 satisfies their
``gpt4all>=2.5.1``). Everything after the installs runs offline: every proxy
points at a dead port, and HOME, the cache folder and llm's folder are
temporary ones, so the user's own folders are never read or written. The
model is the test model (SmolLM2; all-MiniLM-L6-v2 for embeddings), put where
each client looks for models.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conftest import ROOT
from test_packaging import clean_env, fresh_venv, run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the venv and client checks are written for Linux")

# The client versions whose sources were read for this test; bump deliberately.
LLM = "llm==0.36"
LLM_PLUGIN = "llm-gpt4all==0.4"
LANGCHAIN = "langchain-community==0.4.2"
# The original package's last release: its wheel carries its tests.
ORIGINAL = "gpt4all==2.8.2"
ORIGINAL_WHEEL_SHA256 = "c61e977afa72475c076211fd9b59a88334fc0062615be8c2f7716363a21fbafa"

# A wheel build of its own, native CPU variant only: the CMake cache keeps
# -DLLMODEL_CPU_ALL_VARIANTS=OFF, which must not leak into build-wheel (all
# variants, see test_packaging). Inside the checkout, so that the compiler
# cache (CCACHE_BASEDIR) sees the same relative paths on every run.
BUILD_DIR = ROOT / "build-compat-wheel"
DEAD = "http://127.0.0.1:9"

# The keys of the original catalogue (gpt4all.io/models/models3.json), and
# those that every one of its entries carries.
CATALOGUE_KEYS = ("order", "md5sum", "name", "filename", "filesize", "requires", "ramrequired", "parameters",
                  "quant", "type", "description", "url", "promptTemplate", "systemPrompt", "chatTemplate",
                  "systemMessage", "disableGUI", "embeddingModel", "removedIn")
CATALOGUE_REQUIRED = ("order", "md5sum", "name", "filename", "filesize", "requires", "ramrequired", "parameters",
                      "quant", "type", "description")

# The original's tests (gpt4all/tests/test_gpt4all.py in its wheel) that are
# not run, and why. Every other test in that module runs and must pass; those
# that name a model get SmolLM2 under that model's file name (they check
# behaviour: generation, chat sessions, streaming, long input; not wording or
# architecture).
ORIGINAL_DESELECTED = {
    "test_inference_hparams":
        "asserts the wording of orca-mini-3b ('Paris' within 3 tokens sampled at temp 0.7 after a prompt that "
        "ends in a space); the wording of SmolLM2 is checked greedily by wheel_smoke.py and test_generate.py",
    "test_download_model":
        "downloads ggml-all-MiniLM-L6-v2-f16.bin from gpt4all.io; these tests reach only the package index "
        "(downloads are tested against a local server in test_download.py)",
}


def user_env(python: Path, home: Path, **extra: str) -> dict:
    """The environment of a user of the clients, offline: a fresh HOME (and
    cache and config folders inside it), every proxy dead, nothing of this
    checkout on any path."""
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"), "LANG": "C.UTF-8", "TMPDIR": str(home / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = DEAD
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(extra)
    return env


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def model_folder(home: Path) -> Path:
    """Where the original package, and this one by default on Linux, keep models."""
    folder = home / ".cache" / "gpt4all"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def py(python: Path, code: str, env: dict, cwd: Path, *args: str, timeout: float = 300) -> str:
    return run([python, "-c", code, *args], env=env, cwd=cwd, timeout=timeout).stdout


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    """A fresh venv with this package's wheel, then llm, llm-gpt4all,
    langchain-community and pytest from the package index."""
    import gpt4all

    tmp = tmp_path_factory.mktemp("clients")
    tree = run([sys.executable, ROOT / "scripts" / "fetch_llama_cpp.py"]).stdout.strip().splitlines()[-1]
    run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", ROOT], cwd=ROOT, timeout=1800,
        env=clean_env(LLAMA_CPP_DIR=tree, CCACHE_BASEDIR=str(ROOT), CCACHE_NOHASHDIR="1",
                      CMAKE_ARGS="-DLLMODEL_CPU_ALL_VARIANTS=OFF", GPT4ALL_BUILD_DIR=str(BUILD_DIR)))
    (wheel,) = (tmp / "dist").glob("gpt4all-*.whl")
    python = fresh_venv(tmp / "venv")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    run([*pip, "-q", wheel], env=clean_env(), cwd=tmp, timeout=600)
    r = run([*pip, LLM, LLM_PLUGIN, LANGCHAIN, "pytest"], env=clean_env(), cwd=tmp, timeout=900)
    # the plugin's requirement is met by this package: pip keeps it
    assert re.search(r"Requirement already satisfied: gpt4all>=2\.5\.1 in \S+ .*\(" + re.escape(gpt4all.__version__)
                     + r"\)", r.stdout), r.stdout[-3000:]
    assert "Uninstalling gpt4all" not in r.stdout and "gpt4all-2.8" not in r.stdout, r.stdout[-3000:]
    run([python, "-m", "pip", "check", "--disable-pip-version-check"], env=clean_env(), cwd=tmp)
    facts = json.loads(py(python, """if True:
        import importlib.metadata as md, json, gpt4all, gpt4all._native
        print(json.dumps({"file": gpt4all.__file__, "version": gpt4all.__version__,
                          "dist": md.version("gpt4all"), "plugin_requires": md.requires("llm-gpt4all")}))
        """, clean_env(), tmp))
    package = Path(facts["file"]).parent
    assert package.parent.parent.parent.parent == tmp / "venv", facts  # venv/lib/pythonX.Y/site-packages/gpt4all
    assert facts["version"] == facts["dist"] == gpt4all.__version__, facts
    assert (package / "_native.py").is_file() and (package / "lib" / "libllmodel.so").is_file()
    assert any(re.fullmatch(r"gpt4all\s*>=\s*2\.5\.1", req) for req in facts["plugin_requires"]), facts
    return python


# ------------------------------------------------------------------ llm + llm-gpt4all

CATALOGUE = """if True:
    import json, sys
    from gpt4all import GPT4All
    keys = sys.argv[2].split(",")
    entries = [{k: e[k] for k in keys if k in e} for e in GPT4All.list_models()]
    with open(sys.argv[1], "w") as f:
        json.dump(entries, f, indent=2)
"""

DIRECT = """if True:
    import sys
    from gpt4all import GPT4All
    with GPT4All(sys.argv[1], allow_download=False) as m:
        sys.stdout.write(m.generate(sys.argv[2], max_tokens=12, temp=0.0, top_k=40, top_p=0.4,
                                    repeat_penalty=1.18, repeat_last_n=64, n_batch=8))
"""


def test_llm_gpt4all_plugin_lists_and_runs_the_model_offline(venv_python, smollm2_path, tmp_path):
    home = tmp_path / "home"
    (model_folder(home) / smollm2_path.name).symlink_to(smollm2_path)
    llm_dir = tmp_path / "llm"
    llm_dir.mkdir()
    env = user_env(venv_python, home, LLM_USER_PATH=str(llm_dir))

    # llm-gpt4all reads the original's catalogue (gpt4all.io/models/models3.json)
    # through fetch_cached_json(): it keeps it in llm.user_dir() /
    # "gpt4all_models3.json" and uses that file, without the network, while
    # its mtime is less than an hour old (offline, an older one too). The
    # catalogue it gets here is this package's list_models() (offline: the
    # bundled registry) in the original's format.
    cache = llm_dir / "gpt4all_models3.json"
    py(venv_python, CATALOGUE, env, tmp_path, str(cache), ",".join(CATALOGUE_KEYS))
    catalogue = json.loads(cache.read_text())
    assert catalogue and all(isinstance(e, dict) for e in catalogue)
    for entry in catalogue:
        missing = [k for k in CATALOGUE_REQUIRED if k not in entry]
        assert not missing, (entry["filename"], missing)
        int(entry["filesize"])  # the plugin sizes each entry with int()
    (smol,) = [e for e in catalogue if e["filename"] == smollm2_path.name]
    absent = next(e for e in catalogue if not (model_folder(home) / e["filename"]).exists())
    before = cache.read_bytes()

    # the plugin names a model by its file name up to the first dot
    model_id = smollm2_path.name.split(".")[0]
    listing = run(["llm", "models", "list"], env=env, cwd=tmp_path, timeout=300).stdout
    lines = [line for line in listing.splitlines() if line.startswith("gpt4all: ")]
    assert len(lines) == len(catalogue), listing
    (line,) = [line for line in lines if line.startswith(f"gpt4all: {model_id} - ")]
    assert line.startswith(f"gpt4all: {model_id} - {smol['name']}, ") and line.endswith(" (installed)"), line
    # a model not on disk is listed as not installed: this package's "not
    # found" is caught as the FileNotFoundError the plugin expects
    (other,) = [line for line in lines if f" - {absent['name']}, " in line]
    assert not other.endswith("(installed)"), other

    prompt = "The capital of France is"
    out = run(["llm", "-m", model_id, "-o", "max_tokens", "12", "-o", "temp", "0", prompt], env=env, cwd=tmp_path,
              timeout=300)
    assert out.stdout.strip(), f"llm printed no text\n{out.stderr}"
    logged = json.loads(run(["llm", "logs", "-n", "1", "--json"], env=env, cwd=tmp_path).stdout)[0]
    assert logged["model"] == model_id and logged["prompt"] == prompt
    assert out.stdout == logged["response"] + "\n"
    # the plugin ran this package with its options: greedy, so the very text
    # this package generates for the prompt the plugin built
    full_prompt = logged["response_json"]["full_prompt"]
    assert prompt in full_prompt and "<|im_start|>" in full_prompt  # the entry's promptTemplate
    assert py(venv_python, DIRECT, env, tmp_path, smollm2_path.name, full_prompt) == logged["response"]
    # nothing was fetched: the catalogue cache is as written, the model folder as it was
    assert cache.read_bytes() == before
    assert sorted(p.name for p in model_folder(home).iterdir()) == [smollm2_path.name]


# ------------------------------------------------------------------ LangChain

LANGCHAIN_SCRIPT = """if True:
    import json, sys, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community says it is being sunset
    from langchain_community.llms import GPT4All
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self):
            self.tokens = []

        def on_llm_new_token(self, token, **kwargs):
            self.tokens.append(token)

    path, prompt = sys.argv[1], sys.argv[2]
    out = {}
    llm = GPT4All(model=path, max_tokens=16, n_predict=16, temp=0, n_threads=1)
    out["client"] = type(llm.client).__module__ + "." + type(llm.client).__name__
    out["client_path"] = llm.client.config["path"]
    out["threads"] = llm.client.model.thread_count()
    out["invoke"] = llm.invoke(prompt)
    out["invoke_again"] = llm.invoke(prompt)
    out["stream"] = list(llm.stream(prompt))
    out["stop"] = llm.invoke(prompt, stop=["\\n"])
    direct = llm.client.generate(prompt, max_tokens=16, temp=0)
    out["direct"] = direct

    handler = Tokens()
    streaming = GPT4All(model=path, max_tokens=16, n_predict=16, temp=0, streaming=True, callbacks=[handler])
    out["streaming_invoke"] = streaming.invoke(prompt)
    out["streaming_tokens"], handler.tokens = handler.tokens, []
    out["streaming_stream"] = list(streaming.stream(prompt))
    out["streaming_stream_tokens"] = handler.tokens
    try:
        GPT4All(model=path + ".missing")
    except FileNotFoundError as e:
        out["missing"] = type(e).__name__
    print(json.dumps(out))
"""


def test_langchain_gpt4all_invokes_and_streams_offline(venv_python, smollm2_path, tmp_path):
    env = user_env(venv_python, tmp_path / "home", LANGCHAIN_TRACING_V2="false")
    prompt = "The capital of France is"
    out = json.loads(py(venv_python, LANGCHAIN_SCRIPT, env, tmp_path, str(smollm2_path), prompt).splitlines()[-1])
    assert out["client"] == "gpt4all.gpt4all.GPT4All" and out["client_path"] == str(smollm2_path)
    assert out["threads"] == 1  # n_threads went to model.set_thread_count()
    text = out["invoke"]
    assert text.strip()
    # greedy: the same text each time, and the text this package generates itself
    assert out["invoke_again"] == text == out["direct"]
    # an LLM without its own _stream yields the whole reply as one chunk
    assert out["stream"] == [text]
    assert out["stop"] == text.split("\n")[0]
    # streaming=True: the tokens reach the callbacks one by one as they are generated
    assert out["streaming_invoke"] == text
    assert len(out["streaming_tokens"]) > 1 and "".join(out["streaming_tokens"]) == text
    assert "".join(out["streaming_stream"]) == text == "".join(out["streaming_stream_tokens"])
    assert out["missing"] == "ModelNotFoundError"


LANGCHAIN_EMBEDDINGS_SCRIPT = """if True:
    import json, sys, warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.embeddings import GPT4AllEmbeddings
    from gpt4all import Embed4All

    name = sys.argv[1]
    emb = GPT4AllEmbeddings(model_name=name, n_threads=1, gpt4all_kwargs={"allow_download": "True"})
    docs = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "A kitten rests on a rug."]
    out = {"client": type(emb.client).__module__ + "." + type(emb.client).__name__}
    out["documents"] = emb.embed_documents(docs)
    out["query"] = emb.embed_query("Where is the cat?")
    with Embed4All(name, allow_download=False) as direct:
        out["direct"] = direct.embed(docs)
    print(json.dumps(out))
"""


def test_langchain_embeddings_offline(venv_python, minilm_path, tmp_path):
    home = tmp_path / "home"
    (model_folder(home) / DEFAULT_EMBEDDING_MODEL).symlink_to(minilm_path)
    env = user_env(venv_python, home, LANGCHAIN_TRACING_V2="false")
    out = json.loads(py(venv_python, LANGCHAIN_EMBEDDINGS_SCRIPT, env, tmp_path,
                        DEFAULT_EMBEDDING_MODEL).splitlines()[-1])
    assert out["client"] == "gpt4all.embeddings.Embed4All"
    docs, query = out["documents"], out["query"]
    assert len(docs) == 3 and all(len(v) == 384 for v in docs) and len(query) == 384

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    # what Embed4All gives for the same texts, and sense: the two texts about a cat are the closest pair
    assert all(cos(a, b) > 0.99999 for a, b in zip(docs, out["direct"]))
    assert cos(docs[0], docs[2]) > max(cos(docs[0], docs[1]), cos(docs[1], docs[2])) + 0.2
    assert cos(query, docs[0]) > cos(query, docs[1])
    # nothing was fetched
    assert sorted(p.name for p in model_folder(home).iterdir()) == [DEFAULT_EMBEDDING_MODEL]


# ------------------------------------------------------------------ the original's own tests

# The default embedding model's file name: the original's tests that call
# Embed4All() get all-MiniLM-L6-v2 converted from the same weights under it.
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2.gguf2.f16.gguf"


def test_the_original_projects_own_tests_pass(venv_python, smollm2_path, minilm_path, tmp_path):
    dl = tmp_path / "original"
    # its wheel is the same for any platform as far as its Python files go
    run([venv_python, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps", "--only-binary",
         ":all:", "--platform", "manylinux1_x86_64", "--dest", dl, ORIGINAL], env=clean_env(), timeout=600)
    (wheel,) = dl.glob("gpt4all-2.8.2-*.whl")
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == ORIGINAL_WHEEL_SHA256
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("gpt4all/tests/test_gpt4all.py").decode()

    # a folder of its own (no "gpt4all" in it to shadow the installed package)
    tests = tmp_path / "original-tests"
    tests.mkdir()
    (tests / "test_gpt4all.py").write_text(source)

    bodies = dict(re.findall(r"^def (test_\w+)\(.*?\n(.*?)(?=^\S|\Z)", source, re.MULTILINE | re.DOTALL))
    assert set(ORIGINAL_DESELECTED) <= set(bodies), sorted(bodies)
    selected = sorted(set(bodies) - set(ORIGINAL_DESELECTED))
    assert len(selected) == 11 and {"test_embedding", "test_empty_embedding"} <= set(selected), selected
    # the models they name: SmolLM2 under each name, in the default model folder
    home = tmp_path / "home"
    names = {n for t in selected for n in re.findall(r"model_name\s*=\s*['\"]([^'\"]+)['\"]", bodies[t])}
    assert len(names) >= 6, names
    for name in names:
        (model_folder(home) / name).symlink_to(smollm2_path)
    (model_folder(home) / DEFAULT_EMBEDDING_MODEL).symlink_to(minilm_path)

    report = tmp_path / "report.xml"
    # (a test stuck for 2 minutes has its stack dumped into the output)
    cmd = [str(venv_python), "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA", "-o", "faulthandler_timeout=120",
           f"--junitxml={report}", "test_gpt4all.py"]
    for name in ORIGINAL_DESELECTED:
        cmd += ["--deselect", f"test_gpt4all.py::{name}"]
    try:
        r = subprocess.run(cmd, env=user_env(venv_python, home), cwd=tests, capture_output=True, text=True, check=False,
                           timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the original's tests took over {e.timeout} s:\n{_text(e.stdout)[-5000:]}\n"
                    f"{_text(e.stderr)[-3000:]}")
    log = f"{r.stdout[-5000:]}\n{r.stderr[-3000:]}"
    assert r.returncode == 0, log
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcome = {c.get("name"): {e.tag for e in c} & {"failure", "error", "skipped"} for c in cases}
    assert outcome == {name: set() for name in selected}, log
    assert f"{len(selected)} passed, {len(ORIGINAL_DESELECTED)} deselected" in r.stdout, log
    # nothing was downloaded into the model folder
    assert sorted(p.name for p in model_folder(home).iterdir()) == sorted(names | {DEFAULT_EMBEDDING_MODEL})


# ------------------------------------------------------------------ what the clients needed of this package

PLUGIN_PROMPT = "<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n%2<|im_end|>\n"


def test_special_token_text_in_a_plain_prompt_stays_text(smollm2):
    """Outside a chat session the original tokenized the prompt with special
    tokens unparsed (llmodel_prompt(..., special=False)). llm-gpt4all relies
    on it: it fills the catalogue's promptTemplate itself, leaving its "%2"
    and closing "<|im_end|>" in; read as control tokens, SmolLM2 sees a
    finished turn and says nothing at all."""
    as_text = smollm2.model.tokenize(PLUGIN_PROMPT, add_special=True, parse_special=False)
    as_control = smollm2.model.tokenize(PLUGIN_PROMPT, add_special=True, parse_special=True)
    assert len(as_text) > len(as_control)
    out = smollm2.generate(PLUGIN_PROMPT, max_tokens=8, temp=0)
    assert smollm2.last_generation.n_prompt == len(as_text)
    assert out.strip() and smollm2.last_generation.n_generated == 8
    assert "".join(smollm2.generate(PLUGIN_PROMPT, max_tokens=8, temp=0, streaming=True)) == out
    assert smollm2.last_generation.n_prompt == len(as_text)
