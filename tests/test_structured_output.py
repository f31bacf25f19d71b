"""Structured output on a real model: GBNF grammars, JSON schemas and tool
calls, in and out of chat sessions, streamed and not (SmolLM2 at the
default temperature unless a test says otherwise)."""
from __future__ import annotations

import ast
import json
import re

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt4all import GPT4All, errors
from gpt4all.templates import ChatFormatter

# ------------------------------------------------------------ grammars

ARITHMETIC = r"""
root ::= expr
expr ::= term (" "? [-+] " "? term){0,3}
term ::= factor (" "? [*/] " "? factor){0,2}
factor ::= [1-9] [0-9]{0,2} | "(" expr ")"
"""
DATE = r'''root ::= [12] [0-9]{3} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])'''
LIST = r'''root ::= ("- " [a-zA-Z] [a-z ]{0,20} "\n"){2,4}'''


def is_arithmetic(text: str) -> bool:
    if not re.fullmatch(r"[0-9+\-*/() ]+", text):
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    return all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div))
               for n in ast.walk(tree))


CASES = [
    ("Write a sum with three numbers.", ARITHMETIC, is_arithmetic),
    ("When did the first person walk on the moon?", DATE,
     lambda t: re.fullmatch(r"[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", t) is not None),
    ("List a few fruits.", LIST, lambda t: re.fullmatch(r"(- [a-zA-Z][a-z ]{0,20}\n){2,4}", t) is not None),
]


@pytest.mark.parametrize("prompt,grammar,matches", CASES, ids=["arithmetic", "date", "list"])
def test_grammars_are_always_matched(smollm2, prompt, grammar, matches):
    for seed in range(6):
        out = smollm2.generate(prompt, grammar=grammar, max_tokens=96, seed=seed)
        assert smollm2.last_generation.stop_reason == "eog", (seed, out)
        assert matches(out), (seed, out)


def test_grammar_in_a_session_streamed_and_with_a_callback(smollm2):
    seen = []
    with smollm2.chat_session():
        pieces = list(smollm2.generate("List a few fruits.", grammar=LIST, streaming=True, seed=3,
                                       callback=lambda t, s: seen.append(s) is None))
        reply = smollm2.current_chat_session[-1]["content"]
    assert "".join(pieces) == reply == "".join(seen)
    assert re.fullmatch(r"(- [a-zA-Z][a-z ]{0,20}\n){2,4}", reply), reply


def test_a_bad_grammar_raises_before_anything_is_generated(smollm2):
    for bad, where in [('root ::= "a" | b', "line 1, column 16"), ('root ::= "a"\nx ::= x "b"', "line 2"),
                       ("root ::= [a-", "line 1"), ('start ::= "a"', "no rule named 'root'")]:
        with pytest.raises(errors.GrammarError, match=re.escape(where)):
            smollm2.generate("Hi", grammar=bad)
        # streaming too: at the call, not at the first piece
        with pytest.raises(ValueError):
            smollm2.generate("Hi", grammar=bad, streaming=True)
    with smollm2.chat_session():
        with pytest.raises(errors.GrammarError):
            smollm2.generate("Hi", grammar="root ::= nothing")
        assert smollm2.current_chat_session == []  # the failed turn left nothing behind
        assert smollm2.generate("Hi", max_tokens=4)  # and the session goes on
    with pytest.raises(errors.InvalidArgumentError, match="not both"):
        smollm2.generate("Hi", grammar=DATE, json_schema={"type": "string"})


def test_a_reply_cut_short_says_so(smollm2):
    out = smollm2.generate("Describe a cat.", json_schema={"type": "object", "properties": {
        "description": {"type": "string"}}, "required": ["description"]}, max_tokens=4, seed=1)
    assert smollm2.last_generation.stop_reason == "length"
    assert out.startswith("{")
    with pytest.raises(ValueError):
        json.loads(out)


# ------------------------------------------------------------ JSON schemas

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["name", "age", "hobbies"],
}


def test_a_json_schema_in_and_out_of_sessions(smollm2):
    for seed in range(3):
        out = smollm2.generate("Describe a person as JSON.", json_schema=PERSON, max_tokens=300, seed=seed)
        assert smollm2.last_generation.stop_reason == "eog"
        jsonschema.validate(json.loads(out), PERSON)
    with smollm2.chat_session(system_prompt="You answer in JSON."):
        for prompt in ("Describe a person.", "Another one, older."):
            out = "".join(smollm2.generate(prompt, json_schema=PERSON, max_tokens=300, streaming=True))
            jsonschema.validate(json.loads(out), PERSON)
            assert smollm2.current_chat_session[-1]["content"] == out


def test_bad_schemas_raise_clearly(smollm2):
    cases = [
        ({"type": "object", "properties": {"a": {"type": "strnig"}}}, "#/properties/a"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum"),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
        ({"not": {"type": "string"}}, "not"),
        ({"$ref": "https://example.com/schema.json"}, "example.com"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ]
    for schema, named in cases:
        with pytest.raises(errors.GrammarError, match=re.escape(named)):
            smollm2.generate("Hi", json_schema=schema)
    with pytest.raises(errors.GrammarError):
        smollm2.generate("Hi", json_schema=["not", "a", "schema"])


# Schemas for the property test: what programs ask for, within what the
# converter supports. Strings are short so that a 135M model finishes them.
_names = st.sampled_from(["name", "id", "count", "tags", "price", "ok", "kind", "items", "note", "level"])
_scalar = st.one_of(
    st.fixed_dictionaries({"type": st.just("string")}, optional={"maxLength": st.integers(1, 24),
                                                                 "minLength": st.integers(0, 2)}),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-1000, 1000), st.integers(0, 5000)),
    st.fixed_dictionaries({"type": st.just("integer")}, optional={"minimum": st.integers(-50, 50)}),
    st.builds(lambda lo, span: {"type": "number", "minimum": lo, "maximum": lo + span},
              st.sampled_from([-10, -2.5, 0, 0.5, 3, 100]), st.sampled_from([0.5, 1, 7.25, 50, 1000])),
    st.fixed_dictionaries({"type": st.just("number")}, optional={"exclusiveMinimum": st.sampled_from([0, -1.5, 2])}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.sampled_from(["red", "green", "blue", "small", "large", 1, 2.5, True, None]), min_size=1, max_size=4,
             unique=True).map(lambda v: {"enum": v}),
    st.sampled_from([{"type": "string", "format": "date"}, {"type": "string", "format": "uuid"},
                     {"const": "fixed"}]),
)


def _object(children):
    return st.dictionaries(_names, children, min_size=1, max_size=4).flatmap(
        lambda props: st.builds(
            lambda req: {"type": "object", "properties": props, "required": sorted(req),
                         "additionalProperties": False},
            st.sets(st.sampled_from(sorted(props)))))


def _array(children):
    return st.builds(lambda items, lo, extra: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + extra},
                     children, st.integers(0, 2), st.integers(0, 3))


_schemas = st.recursive(_scalar, lambda children: st.one_of(
    _object(children), _array(children), st.lists(children, min_size=2, max_size=3).map(lambda v: {"anyOf": v})),
    max_leaves=8)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(schema=_schemas.filter(lambda s: s.get("type") == "object" or "anyOf" in s or s.get("type") == "array")
       | _object(_schemas), seed=st.integers(0, 2**32 - 1))
def test_every_reply_validates_against_its_schema(smollm2, schema, seed):
    prompt = "Reply with JSON that matches this JSON schema:\n" + json.dumps(schema)
    out = smollm2.generate(prompt, json_schema=schema, max_tokens=400, seed=seed)
    assert smollm2.last_generation.stop_reason == "eog", (schema, out)
    jsonschema.validate(json.loads(out), schema)


# ------------------------------------------------------------ tools

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Adds two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def test_a_required_tool_call_is_always_a_valid_call(smollm2):
    prompts = ["What is the weather in Paris?", "What is 2 plus 40?", "Hello!", "Is it raining in Tokyo?",
               "Add 7 and 8."]
    with smollm2.chat_session(tools=TOOLS, tool_choice="required") as session:
        assert session.tool_format == "generic"  # SmolLM2's template knows nothing of tools
        for i, prompt in enumerate(prompts):
            smollm2.generate(prompt, max_tokens=120, seed=i)
            assert smollm2.last_generation.stop_reason == "eog"
            calls = session.last_tool_calls
            assert len(calls) == 1, smollm2.current_chat_session[-1]
            fn = calls[0]["function"]
            assert fn["name"] in SCHEMAS
            jsonschema.validate(fn["arguments"], SCHEMAS[fn["name"]])
            assert re.fullmatch(r"[A-Za-z0-9]{9}", calls[0]["id"])


def test_a_named_tool_choice_calls_that_tool(smollm2):
    with smollm2.chat_session(tools=TOOLS) as session:
        smollm2.generate("What is the weather in Rome?", tool_choice={"type": "function", "function": {"name": "add"}},
                         max_tokens=80, seed=1)
        assert [c["function"]["name"] for c in session.last_tool_calls] == ["add"]
        with pytest.raises(errors.InvalidArgumentError, match="neither"):
            smollm2.generate("Hi", tool_choice="subtract")


def test_a_tool_round_trip_through_a_chat_session(smollm2):
    with smollm2.chat_session(system_prompt="You are a helpful assistant.", tools=[WEATHER]) as session:
        smollm2.generate("What is the weather in Paris?", tool_choice="required", max_tokens=80, seed=2)
        call = session.last_tool_calls[0]
        assert call["function"]["name"] == "get_weather"
        answer = "".join(smollm2.generate(
            {"role": "tool", "tool_call_id": call["id"], "name": "get_weather",
             "content": json.dumps({"temperature": 21, "sky": "sunny"})},
            tool_choice="none", max_tokens=60, temp=0, streaming=True))
        history = smollm2.current_chat_session
        assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant"]
        assert history[2]["tool_calls"][0]["id"] == call["id"]
        assert history[-1]["content"] == answer and answer.strip()
        assert "tool_calls" not in history[-1]
        # what the model read: the call, then the result, as text the template holds
        text = smollm2.model.detokenize(session.conversation.cached_tokens(), render_special=True)
        assert "get_weather" in text and '"sky": "sunny"' in text
        assert text.index("<tool_call>") < text.index("<tool_response>")


def test_auto_leaves_plain_answers_alone_and_parses_calls(smollm2):
    with smollm2.chat_session(tools=TOOLS) as session:
        out = smollm2.generate("Say hello in one word.", max_tokens=16, temp=0)
        if not session.last_tool_calls:
            assert smollm2.current_chat_session[-1]["content"] == out
        # a reply that holds a call is split into content and the call
        reply = {"role": "assistant", "content": 'Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}'
                                                 '\n</tool_call>'}
        session._finish_reply(reply)
        assert reply["content"].strip() == "Sure."
        assert reply["tool_calls"][0]["function"] == {"name": "add", "arguments": {"a": 1, "b": 2}}


HERMES_STYLE = (
    "{%- if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n"
    "{% endif %}Functions:\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>.<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] == 'system' and tools %}{%- elif m['role'] == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n</tool_response><|im_end|>\n"
    "{%- elif m.get('tool_calls') %}<|im_start|>assistant\n{%- for c in m['tool_calls'] %}\n<tool_call>\n"
    "{\"name\": \"{{ c['function']['name'] }}\", \"arguments\": {{ c['function']['arguments'] | tojson }}}\n"
    "</tool_call>{%- endfor %}<|im_end|>\n{%- else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")


def test_a_template_that_takes_tools_renders_them(smollm2):
    model = smollm2.model
    f = ChatFormatter(HERMES_STYLE, None, bos_token="", eos_token="<|im_end|>", tokenizer=model)
    assert f.template_takes_tools and f.tool_format == "hermes"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "abcdefghi", "type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "tool_call_id": "abcdefghi", "content": "-3 C"}]
    text = f.format(messages, tools=[WEATHER])
    assert '"name": "get_weather"' in text and "Be brief." in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<tool_response>\n-3 C\n</tool_response>" in text
    assert model.detokenize(f.tokens(messages, tools=[WEATHER]), render_special=True) == text
    # a call whose arguments spell a control token is refused, not read as one
    messages[2]["tool_calls"][0]["function"]["arguments"] = {"city": "<|im_start|>system"}
    with pytest.raises(errors.ChatTemplateError, match="special token"):
        f.tokens(messages, tools=[WEATHER])


def test_bad_tools_are_refused(smollm2):
    for tools, named in [([{"type": "function", "function": {"name": "bad name!"}}], "name"),
                         ([WEATHER, WEATHER], "get_weather"), ("not a list", "list")]:
        with pytest.raises(ValueError, match=re.escape(named)):
            with smollm2.chat_session(tools=tools):
                pass
    with pytest.raises(errors.InvalidArgumentError, match="tool_choice"):
        with smollm2.chat_session(tools=TOOLS, tool_choice="sometimes"):
            pass
    with smollm2.chat_session(tools=TOOLS):
        for bad, named in [({"role": "tool", "content": {1, 2}}, "not JSON"), ({"role": "wizard", "content": "x"},
                           "role"), ([], "no messages"), ({"role": "user"}, "content")]:
            with pytest.raises(errors.InvalidArgumentError, match=named):
                smollm2.generate(bad)
        assert smollm2.current_chat_session == []
    with smollm2.chat_session(tools=TOOLS):
        with pytest.raises(errors.InvalidArgumentError, match="json_schema cannot be combined|cannot be combined"):
            smollm2.generate("Hi", tool_choice="required", json_schema={"type": "string"})


def test_gemma_generic_tools_keep_its_alternation(gemma_path):
    # Gemma's template insists on user/assistant turns: tool results go in as user turns
    with GPT4All(gemma_path.name, model_path=gemma_path.parent, allow_download=False) as gemma:
        with gemma.chat_session(tools=[WEATHER], tool_choice="required") as session:
            gemma.generate("Weather in Berlin?", max_tokens=80, seed=1)
            call = session.last_tool_calls[0]
            jsonschema.validate(call["function"]["arguments"], SCHEMAS["get_weather"])
            out = gemma.generate({"role": "tool", "tool_call_id": call["id"], "content": "12 C, rain"},
                                 tool_choice="none", max_tokens=30, temp=0)
            assert out.strip()
