"""Embed4All on a real embedding model: all-MiniLM-L6-v2, converted to GGUF
f16 by llama.cpp's converter from the sentence-transformers weights
(scripts/fetch_models.py), against reference vectors that
sentence-transformers computed from the same weights
(scripts/embedding_reference.py, stored in tests/data)."""
from __future__ import annotations

import base64
import json
import math
import struct
import threading
import warnings
from pathlib import Path

import pytest

import gpt4all
from gpt4all import CancellationError, Embed4All, ModelClosedError
from gpt4all import embeddings as emb

DATA = Path(__file__).resolve().parent / "data"
TEXTS = json.loads((DATA / "embedding_texts.json").read_text(encoding="utf-8"))["texts"]
REFERENCE = json.loads((DATA / "minilm_reference.json").read_text())
MIN_COSINE = 0.999
# the longest text: several contexts of 512 tokens
LONG_INDEX = max(range(len(TEXTS)), key=lambda i: REFERENCE["n_tokens"][i])
LONG = TEXTS[LONG_INDEX]


def vector(b64: str) -> list:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 2}e", raw))


def cos(a, b) -> float:
    return math.fsum(x * y for x, y in zip(a, b)) / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def norm(v) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


@pytest.fixture(scope="module")
def embedder(minilm_path):
    e = Embed4All(minilm_path.name, model_path=minilm_path.parent, allow_download=False, n_threads=2)
    yield e
    e.close()


def test_exported_as_the_original_exports_it():
    assert gpt4all.Embed4All is Embed4All and "Embed4All" in gpt4all.__all__
    assert gpt4all.CancellationError is CancellationError
    assert Embed4All.MIN_DIMENSIONALITY == 64
    assert Embed4All.DEFAULT_MODEL_NAME == "all-MiniLM-L6-v2.gguf2.f16.gguf"


def test_default_model_is_in_the_registry():
    from gpt4all import models

    entries = {e["filename"]: e for e in models.list_models(url="")}
    e = entries[Embed4All.DEFAULT_MODEL_NAME]
    assert e["embeddingModel"] is True and e["md5sum"] == "dd90e2cb7f8e9316ac3796cece9883b5"
    assert e["filesize"] == "45949216"
    for name in ("nomic-embed-text-v1.f16.gguf", "nomic-embed-text-v1.5.f16.gguf"):
        assert entries[name]["embeddingModel"] is True


def test_every_reference_text_matches_sentence_transformers(embedder):
    assert len(TEXTS) >= 100
    truncated = embedder.embed(TEXTS, long_text_mode="truncate")
    worst = min((cos(v, vector(r)), i) for i, (v, r) in enumerate(zip(truncated, REFERENCE["truncate"])))
    assert worst[0] >= MIN_COSINE, f"text {worst[1]}: cosine {worst[0]}"
    # texts over one context: chunks averaged, as the reference script averages them
    assert len(REFERENCE["mean"]) >= 10
    mean = embedder.embed(TEXTS)
    for i, r in REFERENCE["mean"].items():
        assert cos(mean[int(i)], vector(r)) >= MIN_COSINE, i
    # a text within one context is the same in both modes
    for i in range(len(TEXTS)):
        if str(i) not in REFERENCE["mean"]:
            assert cos(mean[i], truncated[i]) > 0.999999, i
    assert all(abs(norm(v) - 1) < 1e-6 for v in mean + truncated)


def test_tokens_are_berts_own(embedder):
    """The text tokens of every reference text are as many as the model's own
    (Hugging Face) tokenizer made: Korean and Hindi included, where
    llama.cpp's WordPiece tokenizer drops characters."""
    counts = [embedder.embed(t, long_text_mode="truncate", return_dict=True)["n_prompt_tokens"] for t in TEXTS]
    assert counts == [min(n, 510) for n in REFERENCE["n_tokens"]]


def test_one_text_or_a_list(embedder):
    one = embedder.embed("The quick brown fox")
    assert isinstance(one, list) and len(one) == 384 and all(isinstance(x, float) for x in one)
    several = embedder.embed(["The quick brown fox", "jumps over the lazy dog"])
    assert len(several) == 2 and all(len(v) == 384 for v in several)
    # a text's vector does not depend on what else is in its batch
    assert cos(several[0], one) > 0.99999
    many = embedder.embed(TEXTS[:70] + ["The quick brown fox"])
    assert cos(many[-1], one) > 0.99999


def test_empty_input_is_refused(embedder):
    with pytest.raises(ValueError, match="empty"):
        embedder.embed("")
    with pytest.raises(ValueError, match="empty"):
        embedder.embed([])
    with pytest.raises(TypeError):
        embedder.embed(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text 1"):
        embedder.embed(["fine", b"bytes"])  # type: ignore[list-item]
    # an empty text among others is embedded as the tokenizer makes it ([CLS] [SEP]), as sentence-transformers does
    vs = embedder.embed(["", "x"])
    assert abs(norm(vs[0]) - 1) < 1e-6


def test_return_dict_counts_the_text_tokens(embedder):
    r = embedder.embed(["hello world", "The quick brown fox"], return_dict=True)
    assert set(r) == {"embeddings", "n_prompt_tokens"}
    assert len(r["embeddings"]) == 2 and r["n_prompt_tokens"] == 2 + 4
    one = embedder.embed("hello world", return_dict=True)
    assert len(one["embeddings"]) == 384 and one["n_prompt_tokens"] == 2


def test_long_text_mean_or_truncate(embedder):
    n = REFERENCE["n_tokens"][LONG_INDEX]
    assert n > 4 * 510
    mean = embedder.embed(LONG, return_dict=True)
    truncated = embedder.embed(LONG, long_text_mode="truncate", return_dict=True)
    # truncate embeds the first 510 tokens, mean every token (chunks share 8)
    assert truncated["n_prompt_tokens"] == 510
    chunks = math.ceil((n - 8) / (510 - 8))
    assert mean["n_prompt_tokens"] == n + 8 * (chunks - 1)
    assert cos(mean["embeddings"], truncated["embeddings"]) < 0.99
    with pytest.raises(ValueError, match="'mean' or 'truncate'"):
        embedder.embed(LONG, long_text_mode="average")


def test_dimensionality(embedder, monkeypatch):
    full = embedder.embed("Matryoshka dolls nest inside each other")
    assert embedder.embed("Matryoshka dolls nest inside each other", dimensionality=384) == full
    for bad in (0, -5):
        with pytest.raises(ValueError, match="positive integer"):
            embedder.embed("x", dimensionality=bad)
    with pytest.raises(ValueError, match="Matryoshka"):
        embedder.embed("x", dimensionality=128)  # MiniLM was not trained for it
    with pytest.raises(ValueError, match="more than"):
        embedder.embed("x", dimensionality=500)
    with pytest.warns(UserWarning, match="less than the suggested minimum of 64"):
        with pytest.raises(ValueError):
            embedder.embed("x", dimensionality=32)
    # a Matryoshka model (nomic-embed-text-v1.5's rule): centered, cut, normalized again
    monkeypatch.setattr(embedder, "spec", emb.EMBEDDING_SPECS["nomic-embed-text-v1.5"])
    cut = embedder.embed("Matryoshka dolls nest inside each other", dimensionality=128, prefix="")
    assert len(cut) == 128 and abs(norm(cut) - 1) < 1e-9
    mean = math.fsum(full) / len(full)
    expected = [x - mean for x in full[:128]]
    assert cos(cut, expected) > 0.9999999
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(embedder.embed(["a", "b"], dimensionality=64, prefix="")[1]) == 64


def test_prefixes(embedder, monkeypatch):
    # MiniLM takes no task prefix
    assert embedder.spec == emb.EmbeddingSpec()
    with pytest.raises(ValueError, match="'search_query' is not a valid task type for model all-MiniLM-L6-v2"):
        embedder.embed("x", prefix="search_query")
    text = "How do plants turn sunlight into sugar?"
    assert embedder.embed(text, prefix="") == embedder.embed(text)
    # nomic-embed-text's rules: search_document by default, the four task names, nothing else
    monkeypatch.setattr(embedder, "spec", emb.EMBEDDING_SPECS["nomic-embed-text-v1"])
    monkeypatch.setattr(embedder, "model_name", "nomic-embed-text-v1")
    as_document = embedder.embed(text)
    as_query = embedder.embed(text, prefix="search_query")
    for task in ("clustering", "classification", "search_document"):
        embedder.embed(text, prefix=task)
    with pytest.raises(ValueError, match="'summarize' is not a valid task type.*search_query"):
        embedder.embed(text, prefix="summarize")
    # the prefix is "task: " before the text
    monkeypatch.setattr(embedder, "spec", None)
    assert cos(as_document, embedder.embed("search_document: " + text)) > 0.999999
    assert cos(as_query, embedder.embed(text, prefix="search_query")) > 0.999999  # an unknown model: as given
    assert cos(as_query, as_document) < 0.9999


def test_atlas_limit(embedder):
    huge = " ".join([LONG] * 4)  # over 8192 tokens
    with pytest.raises(ValueError, match="8192"):
        embedder.embed(huge, atlas=True)
    r = embedder.embed(huge, atlas=True, long_text_mode="truncate", return_dict=True)
    assert r["n_prompt_tokens"] == 510
    assert embedder.embed(huge, return_dict=True)["n_prompt_tokens"] > 8192


def test_cancel_cb(embedder):
    seen = []

    def keep_going(batch_sizes, backend):
        seen.append((list(batch_sizes), backend))
        return False

    texts = TEXTS[:40]
    embedder.embed(texts, cancel_cb=keep_going)
    ((sizes, backend),) = seen
    assert backend == "cpu" and all(isinstance(n, int) and 0 < n <= 512 for n in sizes)
    # every token of every text, with its [CLS] and [SEP], goes through the engine once
    assert sum(sizes) == sum(REFERENCE["n_tokens"][:40]) + 2 * 40
    with pytest.raises(CancellationError):
        embedder.embed(texts, cancel_cb=lambda sizes, backend: True)
    # still usable
    assert len(embedder.embed("after a cancel")) == 384


def test_threads_share_one_embedder(embedder):
    expected = embedder.embed(TEXTS[:8])
    results: dict = {}

    def work(k):
        results[k] = embedder.embed(TEXTS[:8])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for got in results.values():
        assert all(cos(a, b) > 0.99999 for a, b in zip(got, expected))


def test_backend_device_and_close(minilm_path):
    e = Embed4All(minilm_path.name, model_path=minilm_path.parent, allow_download=False)
    assert e.backend == "cpu" and e.device is None
    with e:
        assert len(e.embed("x")) == 384
    with pytest.raises(ModelClosedError):
        e.embed("x")
    e.close()  # again: nothing happens


def test_spec_lookup_by_file_or_metadata_name():
    assert emb.find_spec("nomic-embed-text-v1.5.f16.gguf")[0] == "nomic-embed-text-v1.5"
    assert emb.find_spec("nomic-embed-text-v1.f16.gguf")[0] == "nomic-embed-text-v1"
    assert emb.find_spec("MiniLM L6 H384 Uncased", "all-MiniLM-L6-v2.gguf2.f16.gguf")[0] == "all-MiniLM-L6-v2"
    assert emb.find_spec("some-other-model.gguf") == (None, None)


def test_f32_weights_give_the_same_vectors(minilm_path, tmp_path, monkeypatch):
    """Embed4All holds the F16 weights as F32 (faster products on the CPU);
    the vectors agree with the F16 weights', and the copy leaves no file."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    texts = TEXTS[:20] + [LONG]
    with Embed4All(minilm_path.name, model_path=minilm_path.parent, allow_download=False, f32_weights=False) as f16:
        narrow = f16.embed(texts)
    with Embed4All(minilm_path.name, model_path=minilm_path.parent, allow_download=False) as f32:
        assert f32.gpt4all.model.info.size_bytes > 1.8 * f16.gpt4all.model.info.size_bytes
        wide = f32.embed(texts)
    assert all(cos(a, b) > 0.99999 for a, b in zip(narrow, wide))
    assert list(tmp_path.iterdir()) == []


def embed_child(minilm_path, body: str) -> str:
    import textwrap

    return textwrap.dedent(f"""
        import gc, json, sys, time
        from gpt4all import Embed4All
        e = Embed4All({minilm_path.name!r}, model_path={str(minilm_path.parent)!r}, allow_download=False)
    """) + textwrap.dedent(body)


def test_ctrl_c_during_embedding_raises_at_once_and_the_embedder_stays_usable(minilm_path):
    import signal
    import subprocess
    import sys
    import time

    body = """
        texts = [f"sentence number {i} about nothing in particular, padded with words" for i in range(20000)]
        print("embedding", flush=True)
        try:
            e.embed(texts)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted", time.monotonic())
        print("after:", len(e.embed("still works")))
    """
    child = subprocess.Popen([sys.executable, "-c", embed_child(minilm_path, body)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "embedding"
        time.sleep(1.0)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0].startswith("interrupted"), out
    assert float(lines[0].split()[1]) - sent < 0.5
    assert lines[1] == "after: 384"


@pytest.mark.parametrize("ending", ["exit", "gc"])
def test_exit_or_gc_with_a_live_embedder_is_clean(minilm_path, ending):
    from conftest import run_python

    body = 'v = e.embed(["a", "b"])\n'
    if ending == "gc":
        body += "cycle = [e]\ncycle.append(cycle)\ndel e, cycle\ngc.collect()\nprint('ok')\n"
    r = run_python(embed_child(minilm_path, body))
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)


def test_a_text_longer_than_a_step_takes_a_step_of_its_own(embedder):
    from gpt4all._pyllmodel import Embedder

    texts = [t for t in TEXTS if t != LONG][:30] + [TEXTS[REFERENCE["n_tokens"].index(max(
        n for n in REFERENCE["n_tokens"] if n <= 510))]]
    tokens = [[101, *embedder._tokenize(t), 102] for t in texts]
    assert max(map(len, tokens)) > 200
    with Embedder(embedder.gpt4all.model, n_ctx=512, n_batch=64) as small_steps:
        got = small_steps.embed_tokens(tokens)
    expected = embedder.embed(texts)
    assert all(cos(a, b) > 0.99999 for a, b in zip(got, expected))
