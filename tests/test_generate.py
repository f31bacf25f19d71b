"""GPT4All.generate on a real model: results, streaming, callbacks, parameters."""
from __future__ import annotations

import threading

import pytest

from gpt4all import ContextOverflowError, GPT4All, ModelBusyError

PROMPT = "The capital of France is"


def test_greedy_is_deterministic_and_sensible(smollm2):
    a = smollm2.generate(PROMPT, max_tokens=12, temp=0)
    b = smollm2.generate(PROMPT, max_tokens=12, temp=0, seed=1234)
    assert a == b
    assert "Paris" in a


def test_temp_zero_ignores_seed_and_top_k(smollm2):
    outs = {smollm2.generate(PROMPT, max_tokens=10, temp=0, top_k=k, seed=s) for k, s in [(40, 1), (1, 2), (0, 3)]}
    assert len(outs) == 1


def test_seeded_sampling_is_reproducible(smollm2):
    a = smollm2.generate("Once upon a time", max_tokens=20, temp=1.0, top_p=0.9, seed=42)
    b = smollm2.generate("Once upon a time", max_tokens=20, temp=1.0, top_p=0.9, seed=42)
    assert a == b


def test_streaming_joins_to_blocking_result(smollm2):
    blocking = smollm2.generate(PROMPT, max_tokens=30, temp=0)
    pieces = list(smollm2.generate(PROMPT, max_tokens=30, temp=0, streaming=True))
    assert len(pieces) > 5
    assert "".join(pieces) == blocking


def test_max_tokens_and_n_predict(smollm2):
    smollm2.generate(PROMPT, max_tokens=5, temp=0)
    assert smollm2.last_generation.n_generated == 5
    smollm2.generate(PROMPT, max_tokens=50, n_predict=3, temp=0)  # n_predict wins, as in the original
    assert smollm2.last_generation.n_generated == 3


def test_callback_stops_after_exactly_n_tokens(smollm2):
    seen = []

    def cb(token_id, text):
        seen.append((token_id, text))
        return len(seen) < 4

    out = smollm2.generate(PROMPT, max_tokens=50, temp=0, callback=cb)
    assert len(seen) == 4
    assert smollm2.last_generation.n_generated == 4
    assert smollm2.last_generation.stop_reason == "callback"
    assert out == "".join(t for _, t in seen)
    assert all(isinstance(t, int) and t >= 0 for t, _ in seen)


def test_multibyte_character_split_across_tokens_arrives_whole(smollm2):
    prompt = "Emoji list: 😀 😃 😄 😁 😆 😅"
    seen = []
    out = smollm2.generate(prompt, max_tokens=6, temp=0, callback=lambda t, s: seen.append((t, s)) or True)
    assert "👩" in out  # this model writes it with two byte tokens
    empty = [i for i, (_, s) in enumerate(seen) if s == ""]
    assert empty, "expected a token whose bytes are only part of a character"
    assert seen[empty[0] + 1][1].startswith(("👩", "💪"))
    assert "\ufffd" not in out
    assert "".join(smollm2.generate(prompt, max_tokens=6, temp=0, streaming=True)) == out


def test_stop_sequences(smollm2):
    full = smollm2.generate(PROMPT, max_tokens=30, temp=0)
    assert "\n" in full
    cut = smollm2.generate(PROMPT, max_tokens=30, temp=0, stop=["\n"])
    assert cut == full[: full.index("\n")]
    streamed = "".join(smollm2.generate(PROMPT, max_tokens=30, temp=0, stop="\n", streaming=True))
    assert streamed == cut
    assert smollm2.last_generation.stop_reason == "callback"


def test_exception_in_callback_propagates_and_model_stays_usable(smollm2):
    class Boom(Exception):
        pass

    def cb(token_id, text):
        raise Boom("from the callback")

    with pytest.raises(Boom):
        smollm2.generate(PROMPT, max_tokens=10, callback=cb)
    with pytest.raises(Boom):
        list(smollm2.generate(PROMPT, max_tokens=10, callback=cb, streaming=True))
    assert "Paris" in smollm2.generate(PROMPT, max_tokens=8, temp=0)


def test_breaking_out_of_a_stream_stops_generation(smollm2):
    gen = smollm2.generate("Count: 1, 2, 3,", max_tokens=200, temp=0, repeat_penalty=1.0, streaming=True)
    for i, _ in enumerate(gen):
        if i == 2:
            break
    gen.close()
    stats = smollm2.last_generation
    assert stats.stop_reason == "callback"
    assert stats.n_generated == 3  # the consumer drives generation: nothing was made ahead of it
    assert "Paris" in smollm2.generate(PROMPT, max_tokens=8, temp=0)


@pytest.mark.parametrize("kwargs", [
    {"max_tokens": -1}, {"temp": -0.5}, {"top_k": -1}, {"top_p": 1.5}, {"top_p": -0.1}, {"min_p": 2.0},
    {"repeat_penalty": 0}, {"repeat_last_n": -2}, {"n_batch": 0}, {"max_tokens": 2.5}, {"temp": float("nan")},
    {"stop": [1, 2]}, {"callback": "not callable"}, {"seed": -3},
])
def test_bad_parameters_raise_value_error(smollm2, kwargs):
    with pytest.raises(ValueError) as info:
        smollm2.generate(PROMPT, **kwargs)
    name = next(iter(kwargs))
    assert name in str(info.value) or name == "max_tokens"


def test_prompt_longer_than_context_raises_and_model_stays_usable(smollm2_path):
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, n_ctx=128) as m:
        with pytest.raises(ContextOverflowError, match="context"):
            m.generate("word " * 400, max_tokens=5)
        assert "Paris" in m.generate(PROMPT, max_tokens=8, temp=0)


def test_generation_past_the_context_shifts_instead_of_failing(smollm2_path):
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, n_ctx=64) as m:
        out = m.generate("Count: 1, 2, 3,", max_tokens=120, temp=0, repeat_penalty=1.0)
        assert m.last_generation.n_generated == 120
        assert len(out) > 100


def test_one_model_shared_by_threads_is_serialized(smollm2):
    expected = smollm2.generate(PROMPT, max_tokens=10, temp=0)
    results, failures = [], []

    def work():
        try:
            for _ in range(3):
                results.append(smollm2.generate(PROMPT, max_tokens=10, temp=0))
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert results == [expected] * 12


def test_two_models_run_in_parallel_without_holding_the_gil(smollm2_path):
    models = [GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, n_threads=1)
              for _ in range(2)]
    outs = {}
    try:
        def work(i):
            outs[i] = models[i].generate(PROMPT, max_tokens=40, temp=0, repeat_penalty=1.0)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        ticks = 0
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            ticks += 1  # pure Python: runs only while native code has released the GIL
        for t in threads:
            t.join()
        assert outs[0] == outs[1]
        assert ticks > 1000
    finally:
        for m in models:
            m.close()


def test_abandoned_stream_does_not_block_the_next_call(smollm2):
    gen = smollm2.generate("Count: 1, 2, 3,", max_tokens=200, temp=0, repeat_penalty=1.0, streaming=True)
    assert next(gen)
    # gen is still referenced and unfinished: a new call from the same thread
    # ends it instead of waiting for it (nothing can be reading it meanwhile)
    assert "Paris" in smollm2.generate(PROMPT, max_tokens=8, temp=0)
    stats = smollm2.last_generation
    with pytest.raises(ModelBusyError, match="ended by a later call"):
        next(gen)  # reading on says so: a reply cut short is never passed off as whole
    assert smollm2.last_generation is stats  # and does not claim the later call's statistics
    assert smollm2.generate(PROMPT, max_tokens=8, temp=0)


def test_streaming_runs_on_the_consumers_thread(smollm2):
    before = threading.active_count()
    counts = [threading.active_count() for _ in smollm2.generate(PROMPT, max_tokens=12, temp=0, streaming=True)]
    assert counts and set(counts) == {before}


def test_two_streams_on_two_models_interleave(smollm2_path):
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False) as a, \
            GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False) as b:
        expected = a.generate(PROMPT, max_tokens=12, temp=0)
        ga = a.generate(PROMPT, max_tokens=12, temp=0, streaming=True)
        gb = b.generate(PROMPT, max_tokens=12, temp=0, streaming=True)
        pa, pb = [], []
        for x, y in zip(ga, gb):
            pa.append(x)
            pb.append(y)
        pa += list(ga)
        pb += list(gb)
        assert "".join(pa) == "".join(pb) == expected


def test_thread_count(smollm2):
    smollm2.model.set_thread_count(1)
    assert smollm2.model.thread_count() == 1
    with pytest.raises(ValueError):
        smollm2.model.set_thread_count(0)
    smollm2.model.set_thread_count(2)


def test_prompt_batch_size_changes_speed_not_the_reply(smollm2_path):
    """generate(n_batch=8), the original default that LangChain passes, must
    not evaluate the prompt 8 tokens at a time: the engine uses the context's
    batch, and the reply is exactly what 8-token batches give."""
    smollm2 = GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False)
    prompt = ("Here is a long story about a lighthouse keeper who counts ships. " * 12) + "The keeper said"
    native = smollm2.model
    replies = {}
    for n_batch in (8, 512):
        native.reset()
        pieces = []
        native.generate(prompt, n_predict=24, temp=0, n_batch=n_batch, on_token=lambda t, s: pieces.append(s) or True)
        replies[n_batch] = "".join(pieces)
    native.reset()
    text = smollm2.generate(prompt, max_tokens=24, temp=0, n_batch=8)
    stats = smollm2.last_generation
    assert stats.n_evaluated > 100
    assert text == replies[8] == replies[512]


def test_a_dropped_native_stream_frees_the_model(smollm2):
    import gc

    stream = smollm2.model.stream(PROMPT, n_predict=20, temp=0)
    assert stream.next() is not None
    del stream
    gc.collect()
    assert "Paris" in smollm2.generate(PROMPT, max_tokens=8, temp=0)
    # and an explicit one: ended by the next call on the model, which its reader is told
    stream = smollm2.model.stream(PROMPT, n_predict=20, temp=0)
    smollm2.model.reset()
    assert stream.closed
    with pytest.raises(ModelBusyError):
        stream.next()
    assert stream.close().stop_reason == "callback"


def test_logit_bias_bans_and_favours_tokens(smollm2):
    from gpt4all import InvalidArgumentError, _native

    lib, handle = _native.lib(), smollm2.model._handle
    eog = [t for t in range(smollm2.model.info.n_vocab) if lib.llmodel_token_is_eog(handle, t)]
    assert eog
    prompt = "The capital of France is"
    smollm2.generate(prompt, max_tokens=60, temp=0)
    free = smollm2.last_generation
    # with every end-of-generation token banned the reply runs to max_tokens
    banned = smollm2.generate(prompt, max_tokens=60, temp=0, logit_bias={t: float("-inf") for t in eog})
    assert smollm2.last_generation.n_generated == 60 and smollm2.last_generation.stop_reason == "length", free
    # a large bias makes a token the greedy choice; the same in a session and when streaming
    (comma,) = smollm2.model.tokenize(",")
    assert smollm2.generate(prompt, max_tokens=3, temp=0, logit_bias={comma: 100.0}) == ",,,"
    with smollm2.chat_session():
        assert "".join(smollm2.generate("Hi", max_tokens=2, temp=0, streaming=True,
                                        logit_bias={comma: 100.0})) == ",,"
    assert banned.startswith(smollm2.generate(prompt, max_tokens=5, temp=0))  # nothing left behind
    with pytest.raises(InvalidArgumentError, match="logit_bias"):
        smollm2.generate(prompt, logit_bias={"x": 1.0})
    with pytest.raises(InvalidArgumentError, match="logit_bias"):
        smollm2.generate(prompt, logit_bias=[(1, 2.0)])
    with pytest.raises(InvalidArgumentError, match="not in the vocabulary"):
        smollm2.generate(prompt, logit_bias={smollm2.model.info.n_vocab: 1.0})
    with pytest.raises(InvalidArgumentError, match="finite"):
        smollm2.generate(prompt, logit_bias={comma: float("nan")})
