"""Loading, closing, errors, the loader and import cost."""
from __future__ import annotations

import json
import textwrap

import pytest

from conftest import run_python
from gpt4all import GPT4All, ModelClosedError, ModelNotFoundError


def test_facts(smollm2):
    assert smollm2.backend == "cpu"
    assert smollm2.device is None
    assert smollm2.config["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smollm2.model.info.architecture == "llama"
    assert isinstance(GPT4All.list_gpus(), list)


def test_close_and_context_manager(smollm2_path):
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False) as m:
        assert m.generate("Hi", max_tokens=2)
    with pytest.raises(ModelClosedError):
        m.generate("Hi", max_tokens=2)
    m.close()  # twice is fine
    with pytest.raises(ModelClosedError):
        m.model.tokenize("x")


def test_missing_model_without_download(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        GPT4All("no-such-model.gguf", model_path=tmp_path, allow_download=False)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path) in str(info.value)


def test_bad_files_raise_clear_errors_in_a_subprocess(tmp_path, smollm2_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "random.gguf").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "text.gguf").write_text("just some text\n")
    (tmp_path / "truncated.gguf").write_bytes(smollm2_path.read_bytes()[: 40 << 20])
    code = textwrap.dedent(f"""
        import json
        from gpt4all import GPT4All
        out = {{}}
        for name in ["missing", "empty", "random", "text", "truncated"]:
            try:
                GPT4All(name + ".gguf", model_path={str(tmp_path)!r}, allow_download=False)
                out[name] = "loaded?!"
            except Exception as e:
                out[name] = [type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e)]
        m = GPT4All({smollm2_path.name!r}, model_path={str(smollm2_path.parent)!r}, allow_download=False, n_ctx=64)
        for kw in [dict(temp=-1), dict(top_k=-5), dict(max_tokens=-3)]:
            try:
                m.generate("hi", **kw)
            except ValueError as e:
                out[str(kw)] = ["ValueError", [], str(e)]
        try:
            m.generate("word " * 300)
        except ValueError as e:
            out["overlong"] = [type(e).__name__, [], str(e)]
        print(json.dumps(out))
    """)
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = json.loads(r.stdout)
    assert out["missing"][0] == "ModelNotFoundError" and "FileNotFoundError" in out["missing"][1]
    assert "empty" in out["empty"][2]
    assert "not a GGUF" in out["random"][2] and "ValueError" in out["random"][1]
    assert "not a GGUF" in out["text"][2]
    assert "truncated" in out["truncated"][2]
    assert "temp" in out["{'temp': -1}"][2]
    assert "top_k" in out["{'top_k': -5}"][2]
    assert out["overlong"][0] == "ContextOverflowError" and "context" in out["overlong"][2]


def test_silent_by_default_and_verbose_logs(smollm2_path):
    code = (f"from gpt4all import GPT4All\n"
            f"m = GPT4All({smollm2_path.name!r}, model_path={str(smollm2_path.parent)!r}, allow_download=False"
            f"{{}})\nm.generate('hi', max_tokens=3)\n")
    quiet = run_python(code.format(""))
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = run_python(code.format(", verbose=True"))
    assert loud.returncode == 0 and "gpt4all.native" in loud.stderr


def test_import_is_cheap_and_does_not_open_the_library():
    # what makes an import dear is what it pulls in: none of the dependencies
    # that only some calls need, and not the native library
    heavy = ("jinja2", "requests", "tqdm", "platformdirs", "urllib3", "secrets", "json", "asyncio", "ssl")
    code = ("import time; t = time.perf_counter(); import gpt4all; dt = time.perf_counter() - t\n"
            "import sys; print(dt, 'gpt4all._native' in sys.modules and sys.modules['gpt4all._native']._lib is None, "
            f"','.join(m for m in {heavy!r} if m in sys.modules) or '-')")
    times = []
    for _ in range(3):
        r = run_python(code)
        assert r.returncode == 0, r.stderr
        dt, unopened, loaded = r.stdout.split()
        assert unopened == "True"
        assert loaded == "-", f"import gpt4all loaded {loaded}"
        times.append(float(dt))
    # ~70 ms here (stdlib: typing, dataclasses, logging, ctypes); a gross
    # regression (a heavy dependency at import) would be far above this
    assert min(times) < 0.15, times


def test_missing_library_error_says_where_it_looked(tmp_path):
    r = run_python("from gpt4all import GPT4All\nGPT4All.list_gpus()",
                   env_extra={"GPT4ALL_LIBRARY": str(tmp_path / "nowhere")})
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr and str(tmp_path / "nowhere") in r.stderr
    assert "cmake" in r.stderr


def test_seed_examples_run_as_written(tmp_path, smollm2_path):
    # The documented examples name an old model file; a real GGUF stands in under that name.
    (tmp_path / "orca-mini-3b.ggmlv3.q4_0.bin").symlink_to(smollm2_path)
    env = {"GPT4ALL_MODEL_PATH": str(tmp_path)}
    quickstart = textwrap.dedent("""
        from gpt4all import GPT4All
        model = GPT4All("orca-mini-3b.ggmlv3.q4_0.bin")
        output = model.generate("The capital of France is ", max_tokens=3)
        print(output)
    """)
    chat = textwrap.dedent("""
        from gpt4all import GPT4All
        model = GPT4All(model_name='orca-mini-3b.ggmlv3.q4_0.bin')
        with model.chat_session():
            response = model.generate(prompt='hello', top_k=1)
            response = model.generate(prompt='write me a short poem', top_k=1)
            response = model.generate(prompt='thank you', top_k=1)
            print(model.current_chat_session)
    """)
    streaming = textwrap.dedent("""
        from gpt4all import GPT4All
        model = GPT4All("orca-mini-3b.ggmlv3.q4_0.bin")
        tokens = []
        for token in model.generate("The capital of France is", max_tokens=20, streaming=True):
            tokens.append(token)
        print(tokens)
    """)
    manual = textwrap.dedent("""
        from gpt4all import GPT4All
        model = GPT4All("orca-mini-3b.ggmlv3.q4_0.bin")

        with model.chat_session():
            tokens = list(model.generate(prompt='hello', top_k=1, streaming=True))
            model.current_chat_session.append({'role': 'assistant', 'content': ''.join(tokens)})

            tokens = list(model.generate(prompt='write me a poem about dogs', top_k=1, streaming=True))
            model.current_chat_session.append({'role': 'assistant', 'content': ''.join(tokens)})

            print(model.current_chat_session)
    """)
    import ast

    r = run_python(quickstart, env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.strip()
    r = run_python(chat, env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    session = ast.literal_eval(r.stdout)
    assert [m["role"] for m in session] == ["user", "assistant"] * 3
    assert [m["content"] for m in session[::2]] == ["hello", "write me a short poem", "thank you"]
    r = run_python(streaming, env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    tokens = ast.literal_eval(r.stdout)
    assert 1 <= len(tokens) <= 20 and all(isinstance(t, str) for t in tokens)
    r = run_python(manual, env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    session = ast.literal_eval(r.stdout)
    assert [m["role"] for m in session] == ["user", "assistant"] * 2


def test_langchain_wrapper_call_pattern(smollm2_path):
    # What LangChain's GPT4All wrapper does: a "dir/" model_path, model_type from its
    # `backend` field, set_thread_count on .model, and generate() with all of these keywords.
    client = GPT4All(model_name=smollm2_path.name, model_path=str(smollm2_path.parent) + "/", model_type="llama",
                     allow_download=False, device="cpu")
    try:
        assert client.model_type == "llama"
        client.model.set_thread_count(1)
        params = {"max_tokens": 200, "n_predict": 16, "top_k": 40, "top_p": 0.1, "temp": 0.0, "n_batch": 8,
                  "repeat_penalty": 1.18, "repeat_last_n": 64, "streaming": False}
        text = ""
        for token in client.generate("The capital of France is", **params):
            text += token
        assert "Paris" in text
        assert client.last_generation.n_generated == 16
    finally:
        client.close()


def test_a_library_that_is_not_llmodel_is_refused_by_name():
    from conftest import ROOT

    other = next((ROOT / "build" / "bin").glob("*ggml-base.*"))  # a real shared library, but not llmodel
    r = run_python("from gpt4all import GPT4All\nGPT4All.list_gpus()", env_extra={"GPT4ALL_LIBRARY": str(other)})
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr and "llmodel_abi_version" in r.stderr, r.stderr


def test_default_model_directory_reads_and_moves_the_model_folder(tmp_path, smollm2_path, monkeypatch):
    import gpt4all.gpt4all as module

    monkeypatch.delenv("GPT4ALL_MODEL_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # read, as the original documents it: the folder in use
    assert module.DEFAULT_MODEL_DIRECTORY == module.default_model_dir() == tmp_path / "xdg" / "gpt4all"
    # assigned, as programs written for the original do: every lookup uses it
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / smollm2_path.name).symlink_to(smollm2_path)
    monkeypatch.setattr(module, "DEFAULT_MODEL_DIRECTORY", folder, raising=False)
    with GPT4All(smollm2_path.name, allow_download=False) as model:
        assert model.config["path"] == str(folder / smollm2_path.name)
    with pytest.raises(ModelNotFoundError, match=str(folder / "absent.gguf")):
        GPT4All("absent.gguf", allow_download=False)
    # a str works as well as a Path
    monkeypatch.setattr(module, "DEFAULT_MODEL_DIRECTORY", str(tmp_path / "elsewhere"))
    assert module.default_model_dir() == tmp_path / "elsewhere"


def test_version_continues_the_originals_numbering():
    import gpt4all

    major, minor, _ = (int(x) for x in gpt4all.__version__.split("."))
    assert (major, minor) > (2, 8)  # past the original's last release, 2.8.2
