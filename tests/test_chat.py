"""Chat sessions: history, templates, cache reuse, long conversations."""
from __future__ import annotations

import pytest

from gpt4all import ContextOverflowError, GPT4All

LONG_SYSTEM = ("You are a meticulous assistant for a shipping company. " * 12).strip()


def test_history_as_the_seed_prints_it(smollm2):
    with smollm2.chat_session():
        smollm2.generate(prompt="hello", top_k=1, max_tokens=20)
        smollm2.generate(prompt="thank you", top_k=1, max_tokens=20)
        s = smollm2.current_chat_session
        assert [m["role"] for m in s] == ["user", "assistant", "user", "assistant"]
        assert s[0]["content"] == "hello" and s[2]["content"] == "thank you"
        assert all(m["content"] for m in s)
    assert smollm2.current_chat_session is None


def test_system_prompt_comes_first(smollm2):
    with smollm2.chat_session(system_prompt="You are a pirate."):
        smollm2.generate("hi", max_tokens=5, temp=0)
        assert smollm2.current_chat_session[0] == {"role": "system", "content": "You are a pirate."}
        assert len(smollm2.current_chat_session) == 3


def test_streaming_in_a_session_records_the_reply_once_even_with_manual_append(smollm2):
    with smollm2.chat_session():
        tokens = list(smollm2.generate(prompt="hello", top_k=1, max_tokens=15, streaming=True))
        smollm2.current_chat_session.append({"role": "assistant", "content": "".join(tokens)})
        tokens2 = list(smollm2.generate(prompt="write me a poem about dogs", top_k=1, max_tokens=15, streaming=True))
        smollm2.current_chat_session.append({"role": "assistant", "content": "".join(tokens2)})
        s = smollm2.current_chat_session
        assert [m["role"] for m in s] == ["user", "assistant", "user", "assistant"]
        assert s[1]["content"] == "".join(tokens) and s[3]["content"] == "".join(tokens2)
        # without the manual append, the reply is recorded all the same
        tokens3 = list(smollm2.generate(prompt="and cats?", top_k=1, max_tokens=10, streaming=True))
        assert smollm2.current_chat_session[-1] == {"role": "assistant", "content": "".join(tokens3)}


def test_chat_template_from_the_model_is_used(smollm2):
    with smollm2.chat_session():
        smollm2.generate("hello", max_tokens=1, temp=0)
        # ChatML: the model saw the template's tokens, not the bare word
        assert smollm2.last_generation.n_prompt > 10


def test_second_turn_evaluates_only_new_tokens(smollm2):
    m = smollm2
    with m.chat_session(system_prompt=LONG_SYSTEM):
        m.generate("Where is my parcel?", max_tokens=20, temp=0)
        first = m.last_generation
        assert first.n_prompt > 100
        m.generate("It was sent on Monday.", max_tokens=20, temp=0)
        second = m.last_generation
        # the system prompt and the first turn come from the cache
        assert second.n_reused >= first.n_prompt
        assert second.n_evaluated == second.n_prompt - second.n_reused
        assert second.n_evaluated < 60


def test_legacy_prompt_template(smollm2):
    with smollm2.chat_session(system_prompt="### System:\nBe brief.\n",
                              prompt_template="### User:\n{0}\n### Response:\n"):
        out = smollm2.generate("Name a color.", max_tokens=8, temp=0)
        assert out
        assert smollm2.current_chat_session[-1]["content"] == out
    with pytest.raises(ValueError, match="%1"):
        with smollm2.chat_session(prompt_template="### User: %1"):
            pass


def test_long_session_drops_oldest_turns_but_keeps_system_prompt(smollm2_path):
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, n_ctx=256) as m:
        with m.chat_session(system_prompt="You are terse."):
            for i in range(8):
                m.generate(f"Tell me fact number {i} about the moon.", max_tokens=40, temp=0)
                assert m.last_generation.n_prompt + m.last_generation.n_generated <= 256 + 40
            assert len(m.current_chat_session) == 1 + 16
            assert m.current_chat_session[0]["role"] == "system"


def test_over_long_message_in_a_session_raises_and_session_goes_on(smollm2_path):
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, n_ctx=128) as m:
        with m.chat_session():
            with pytest.raises(ContextOverflowError):
                m.generate("tell me " * 200, max_tokens=5)
            assert m.current_chat_session == []
            assert m.generate("hi", max_tokens=5, temp=0)
            assert len(m.current_chat_session) == 2


def test_gemma3_second_architecture_and_template(gemma_path):
    with GPT4All(gemma_path.name, model_path=gemma_path.parent, allow_download=False, n_ctx=1024) as m:
        assert m.model.info.architecture == "gemma3"
        assert m.model.info.chat_template is None  # this GGUF has none: the registry supplies it
        assert "start_of_turn" in m.config["chatTemplate"]
        with m.chat_session():
            out = m.generate("What is the capital of France?", max_tokens=10, temp=0)
            assert out.strip()
            expected = m.model.tokenize("<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
                                        "<start_of_turn>model\n", add_special=False)
            assert m.last_generation.n_prompt == len(expected)
            first = m.last_generation
            m.generate("And of Italy?", max_tokens=10, temp=0)
            assert m.last_generation.n_reused >= first.n_prompt
        raw = m.generate("The capital of France is", max_tokens=8, temp=0)
        assert raw and raw == m.generate("The capital of France is", max_tokens=8, temp=0)


def test_the_turn_that_drops_old_turns_shifts_the_cache_instead_of_rereading_it(smollm2_path):
    system = "You are a terse assistant. " * 10  # ~60 tokens kept in front at every turn
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, n_ctx=256) as m:
        with m.chat_session(system_prompt=system):
            shifted = None
            for i in range(20):
                m.generate(f"Tell me one fact about the number {i}.", max_tokens=16, temp=0)
                stats, skip = m.last_generation, m._session_skip
                if skip and shifted is None:
                    shifted = stats
                elif shifted is not None:
                    break
            assert shifted is not None, "the conversation never outgrew the context"
            # the cache after the dropped turns was moved, not evaluated again:
            # only the new message (and the reply's last token) is read
            assert shifted.n_reused > shifted.n_prompt // 2, shifted
            assert shifted.n_evaluated < 64, shifted
            # and the turn after it reuses the shifted cache as usual
            assert stats.n_evaluated < 64, stats
            assert m.current_chat_session[0] == {"role": "system", "content": system}
