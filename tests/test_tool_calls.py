"""Tool calling's text side: parsing each format from model replies (including
broken and hostile ones), telling the format from a chat template, checking
tools, the generic path's prompt and messages, and call grammars. No model."""
from __future__ import annotations

import json
import random
import re
import time

import jinja2
import pytest

from gpt4all import _tool_calls as tc
from gpt4all._tool_calls import (ToolCall, call_grammar, call_prefix, check_tools, content_end, detect_format,
                                 generic_messages, generic_system_prompt, parse_tool_calls, template_messages,
                                 template_uses_tools)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
SEARCH = {"name": "web.search", "description": "Search the web.",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
CLOCK = {"type": "function", "function": {"name": "now"}}
TOOLS = [WEATHER, SEARCH, CLOCK]

ID_RE = re.compile(r"[A-Za-z0-9]{9}")


def calls_of(text: str, fmt: str, tools=TOOLS):
    content, calls = parse_tool_calls(text, fmt, tools)
    for call in calls:
        assert ID_RE.fullmatch(call.id)
    assert len({c.id for c in calls}) == len(calls)
    return content, [(c.name, c.arguments) for c in calls]


# ------------------------------------------------------------------ hermes

def test_hermes_single_call():
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'
    assert calls_of(reply, "hermes") == ("", [("get_weather", {"city": "Paris", "unit": "C"})])


def test_hermes_several_calls_after_text():
    reply = ("I'll look both up.\n\n"
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "web.search", "arguments": {"query": "Paris events"}}\n</tool_call>')
    assert calls_of(reply, "hermes") == ("I'll look both up.", [
        ("get_weather", {"city": "Paris"}), ("web.search", {"query": "Paris events"})])


def test_hermes_whitespace_thinking_and_text_after():
    reply = ("<think>\nThe user wants the time.\n</think>\n\n"
             '<tool_call>  {"name":"now","arguments":{}}   </tool_call>\nOne moment.')
    content, calls = calls_of(reply, "hermes")
    assert calls == [("now", {})]
    assert content == "<think>\nThe user wants the time.\n</think>\n\n\nOne moment."


def test_hermes_missing_close_tag_at_the_very_end():
    reply = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    assert calls_of(reply, "hermes") == ("Checking.", [("get_weather", {"city": "Oslo"})])


def test_hermes_missing_close_tag_in_the_middle_stays_content():
    first = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}} and then'
    second = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    content, calls = calls_of(first + "\n" + second, "hermes")
    assert calls == [("now", {})]
    assert content == first


def test_hermes_arguments_as_json_string():
    reply = '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}\n</tool_call>'
    assert calls_of(reply, "hermes") == ("", [("get_weather", {"city": "Lima"})])


def test_hermes_missing_or_null_arguments_are_none():
    for body in ('{"name": "now"}', '{"name": "now", "arguments": null}', '{"name": "now", "arguments": ""}'):
        assert calls_of(f"<tool_call>\n{body}\n</tool_call>", "hermes") == ("", [("now", {})])


def test_hermes_malformed_json_stays_content():
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>'
    good = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    assert calls_of(bad, "hermes") == (bad, [])
    assert calls_of(bad + "\n" + good, "hermes") == (bad, [("now", {})])


@pytest.mark.parametrize("body", [
    '{"name": "rm_rf", "arguments": {"path": "/"}}',          # not a tool we offered
    '{"name": "get_weather", "arguments": ["Paris"]}',         # arguments not an object
    '{"name": "get_weather", "arguments": "Paris"}',           # a string that is not a JSON object
    '{"name": "get_weather", "arguments": "[1, 2]"}',
    '{"name": 7, "arguments": {}}',
    '{"arguments": {"city": "Paris"}}',
    '"get_weather"',
    '{"name": "get_weather", "arguments": {"x": NaN}}',        # not JSON
    '[]',
])
def test_hermes_non_calls_stay_content(body):
    reply = f"Hmm.\n<tool_call>\n{body}\n</tool_call>"
    assert calls_of(reply, "hermes") == (reply, [])


def test_hermes_fenced_json_and_list_in_one_block():
    reply = ('<tool_call>\n```json\n{"name": "now", "arguments": {}}\n```\n</tool_call>\n'
             '<tool_call>[{"name": "now", "arguments": {}}, {"name": "web.search", "arguments": {"query": "x"}}]'
             '</tool_call>')
    assert calls_of(reply, "hermes")[1] == [("now", {}), ("now", {}), ("web.search", {"query": "x"})]


def test_hermes_plain_reply_is_unchanged():
    reply = "  The weather in Paris is usually mild. {\"name\": \"now\"}  "
    assert calls_of(reply, "hermes") == (reply, [])
    assert calls_of(reply, "generic") == (reply, [])


# ------------------------------------------------------------------ llama3

def test_llama3_bare_object():
    reply = '{"name": "get_weather", "parameters": {"city": "Berlin"}}'
    assert calls_of(reply, "llama3") == ("", [("get_weather", {"city": "Berlin"})])


def test_llama3_python_tag_several_calls_and_arguments_key():
    reply = ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Berlin"}}; '
             '{"name": "web.search", "arguments": {"query": "Berlin"}};')
    assert calls_of(reply, "llama3") == ("", [("get_weather", {"city": "Berlin"}), ("web.search", {"query": "Berlin"})])


def test_llama3_text_before_python_tag():
    reply = 'Let me check.<|python_tag|>{"name": "now", "parameters": {}}'
    assert calls_of(reply, "llama3") == ("Let me check.", [("now", {})])


def test_llama3_parameters_as_string():
    reply = '\n {"name": "get_weather", "parameters": "{\\"city\\": \\"Rome\\"}"}'
    assert calls_of(reply, "llama3") == ("", [("get_weather", {"city": "Rome"})])


@pytest.mark.parametrize("reply", [
    'Here is JSON: {"name": "get_weather", "parameters": {"city": "Berlin"}}',  # JSON inside prose
    '{"name": "Bob", "parameters": {"age": 3}}',                                 # not a tool
    '{"name": "get_weather", "parameters": {"city": "Berlin"}',                  # cut short
    '<|python_tag|>brave_search.call(query="weather")',                          # built-in tool syntax
    '{"name": "get_weather", "parameters": 5}',
])
def test_llama3_non_calls_stay_content(reply):
    assert calls_of(reply, "llama3") == (reply, [])


def test_llama3_bad_call_after_good_one_stays_content():
    reply = '{"name": "now", "parameters": {}}; {"name": "nope", "parameters": {}}'
    assert calls_of(reply, "llama3") == ('{"name": "nope", "parameters": {}}', [("now", {})])


# ------------------------------------------------------------------ mistral

def test_mistral_v03_array():
    reply = ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Nice"}, "id": "a1b2c3d4e"}, '
             '{"name": "now", "arguments": {}}]')
    assert calls_of(reply, "mistral") == ("", [("get_weather", {"city": "Nice"}), ("now", {})])


def test_mistral_ids_are_always_fresh():
    reply = '[TOOL_CALLS][{"name": "now", "arguments": {}, "id": "a1b2c3d4e"}]'
    # The model's own ids may repeat an earlier turn's: results are matched by ids made here.
    call_id = parse_tool_calls(reply, "mistral", TOOLS)[1][0].id
    assert ID_RE.fullmatch(call_id) and call_id != "a1b2c3d4e"


def test_mistral_named_form_repeated_and_with_call_id():
    reply = ('Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Nice"}'
             '[TOOL_CALLS]web.search[CALL_ID]x9Y8z7W6v[ARGS]{"query": "Nice"}')
    assert calls_of(reply, "mistral") == ("Sure.", [("get_weather", {"city": "Nice"}),
                                                    ("web.search", {"query": "Nice"})])
    back_to_back = '[TOOL_CALLS]now[ARGS]{}get_weather[ARGS]{"city": "Nice"}'
    assert calls_of(back_to_back, "mistral")[1] == [("now", {}), ("get_weather", {"city": "Nice"})]


def test_mistral_array_without_control_token():
    reply = '[{"name": "now", "arguments": {}}]'
    assert calls_of(reply, "mistral") == ("", [("now", {})])


@pytest.mark.parametrize("reply", [
    '[TOOL_CALLS][{"name": "now", "arguments": {}}, {"name": "evil", "arguments": {}}]',  # one unknown: all stay
    '[TOOL_CALLS][{"name": "now", "arguments": {}',
    '[TOOL_CALLS]evil[ARGS]{}',
    '[TOOL_CALLS]get_weather[ARGS][1]',
    '[TOOL_CALLS][]',
    '[1, 2, 3]',
    'See [the docs](https://example.com).',
])
def test_mistral_non_calls_stay_content(reply):
    assert calls_of(reply, "mistral") == (reply, [])


# ------------------------------------------------------------------ generic

def test_generic_parses_hermes_blocks_and_a_bare_object():
    block = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    assert calls_of("Ok. " + block, "generic") == ("Ok.", [("now", {})])
    # Small models given only the system prompt often drop the tags.
    assert calls_of(' {"name": "now", "arguments": {}}\n', "generic") == ("", [("now", {})])
    assert calls_of('```json\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```', "generic") == (
        "", [("get_weather", {"city": "Rome"})])
    # ... but not JSON inside prose, and hermes (a trained format) takes no bare object.
    assert calls_of('Call {"name": "now", "arguments": {}}', "generic")[1] == []
    assert calls_of('{"name": "now", "arguments": {}}', "hermes")[1] == []


def test_no_tools_means_no_calls():
    block = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    assert parse_tool_calls(block, "hermes", []) == (block, [])


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError):
        parse_tool_calls("x", "chatml", TOOLS)


# ------------------------------------------------------------------ ids and the ToolCall type

def test_ids_are_unique_and_nine_alphanumerics():
    reply = "\n".join('<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>' for _ in range(300))
    _, calls = parse_tool_calls(reply, "hermes", TOOLS)
    assert len(calls) == 300
    assert all(ID_RE.fullmatch(c.id) for c in calls)
    assert len({c.id for c in calls}) == 300


def test_tool_call_message_dict_and_hash():
    call = ToolCall(id="abcDEF123", name="get_weather", arguments={"city": "Paris"})
    d = call.to_message_dict()
    assert d == {"id": "abcDEF123", "type": "function",
                 "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    d["function"]["arguments"]["city"] = "Rome"
    assert call.arguments == {"city": "Paris"}
    assert json.loads(call.arguments_json) == {"city": "Paris"}
    assert hash(call) == hash(ToolCall(id="abcDEF123", name="get_weather", arguments={"city": "Rome"}))


# ------------------------------------------------------------------ hostile replies

def test_hostile_replies_never_raise():
    rng = random.Random(1234)
    pieces = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>", "{", "}",
              "[", "]", '"name"', '"arguments"', '"parameters"', ":", ",", ";", '"now"', '"get_weather"', "\\",
              '"', "```", " ", "\n", "1e999999", "-", "NaN", "9" * 5000, "now[ARGS]"]
    for _ in range(1500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        for fmt in tc.FORMATS:
            content, calls = parse_tool_calls(text, fmt, TOOLS)
            assert isinstance(content, str)
            assert all(c.name in ("now", "get_weather", "web.search") for c in calls)
            assert 0 <= content_end(text, fmt) <= len(text)


def test_deep_nesting_and_huge_replies_do_not_raise():
    deep = '<tool_call>{"name": "now", "arguments": ' + "[" * 100000 + "]" * 100000 + "}</tool_call>"
    assert parse_tool_calls(deep, "hermes", TOOLS)[1] == []
    assert parse_tool_calls("[TOOL_CALLS]" + "[" * 100000, "mistral", TOOLS)[1] == []
    assert parse_tool_calls("{" * 100000, "llama3", TOOLS)[1] == []
    many = "<tool_call>" * 20000
    assert parse_tool_calls(many, "generic", TOOLS) == (many, [])


def test_replies_looping_on_broken_calls_parse_fast():
    broken = '<tool_call>\n{"name": "now", "arguments": {"a": 1}\n</tool_call>\n'
    good = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    assert parse_tool_calls(broken * 10 + good, "hermes", TOOLS)[1]  # a few broken calls do not hide a good one
    # Each failed decode costs time in proportion to the text before it: a
    # reply of 2 MB made of broken calls would take minutes if all were tried.
    for text, fmt in [(broken * 35000 + good, "hermes"), ('<tool_call>["' + '<tool_call>[", "' * 150000, "generic"),
                      ('[TOOL_CALLS][' + '"[TOOL_CALLS][", ' * 150000, "mistral")]:
        started = time.monotonic()
        assert parse_tool_calls(text, fmt, TOOLS) == (text, [])
        assert time.monotonic() - started < 10


# ------------------------------------------------------------------ templates

# Hand-written snippets in the styles of the formats (not any model's template).
HERMES_TEMPLATE = """{%- if tools %}<|im_start|>system
Functions available:
{%- for t in tools %}
{{ t | tojson }}
{%- endfor %}
Answer with <tool_call>{"name": ..., "arguments": ...}</tool_call>.<|im_end|>
{% endif %}
{%- for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}"""

LLAMA3_TEMPLATE = """{%- if tools is not none %}{%- set tool_text = "Environment: ipython" %}{%- endif %}
{%- for m in messages %}
{%- if m.role == 'ipython' %}<|start_header_id|>ipython<|end_header_id|>{{ m.content }}<|eot_id|>
{%- elif m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>
{%- set c = m.tool_calls[0].function %}
{{- '{"name": "' + c.name + '", "parameters": ' + (c.arguments | tojson) + '}' }}<|eom_id|>
{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>{{ m.content }}<|eot_id|>{%- endif %}
{%- endfor %}"""

LLAMA3_NO_IPYTHON_TEXT = """{%- set custom = tools %}
{%- for m in messages %}{{ m.content }}{% if m.role == 'tool' %}<|eom_id|>{% endif %}{%- endfor %}
Reply with {"name": function name, "parameters": dictionary of argument name and its value}"""

MISTRAL_TEMPLATE = """{%- for m in messages %}
{%- if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}
{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]
{%- elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}{{ eos_token }}
{%- else %}{{ m.content }}{{ eos_token }}{% endif %}
{%- endfor %}"""

PLAIN_TEMPLATE = """{% for m in messages %}<|im_start|>{{ m['role'] }}
{{ m['content'] }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

OTHER_TOOLS_TEMPLATE = """{% if tools %}<|tools|>{{ tools | tojson }}<|/tools|>{% endif %}
{% for m in messages %}{{ m.content }}{% endfor %}"""


def test_detect_format():
    assert detect_format(HERMES_TEMPLATE) == "hermes"
    assert detect_format(LLAMA3_TEMPLATE) == "llama3"
    assert detect_format(LLAMA3_NO_IPYTHON_TEXT) == "llama3"
    assert detect_format("{% if tools %}<|python_tag|>{% endif %}") == "llama3"
    assert detect_format(MISTRAL_TEMPLATE) == "mistral"
    assert detect_format("{{ tools }}[TOOL_CALLS]") == "mistral"
    assert detect_format(PLAIN_TEMPLATE) == "generic"
    assert detect_format(OTHER_TOOLS_TEMPLATE) == "generic"  # reads tools, in a format we do not parse
    assert detect_format(None) == "generic"
    assert detect_format("") == "generic"


def test_markers_without_reading_tools_are_generic():
    # The text mentions <tool_call> but the template never reads `tools`.
    source = "{% for m in messages %}{{ m.content }}{% endfor %}Use <tool_call> blocks for tools."
    assert detect_format(source) == "generic"


@pytest.mark.parametrize("source, uses", [
    ("{% if tools %}x{% endif %}", True),
    ("{{- tools | tojson }}", True),
    ("{%- for tool in tools %}{{ tool.function.name }}{% endfor %}", True),
    ("{% if tools is defined and tools is not none %}{% endif %}", True),
    ("{{ (tools or [])|length }}", True),
    ("You have tools. {{ messages[0].content }}", False),            # text only
    ("{# uses tools some day #}{{ x }}", False),                      # a comment
    ("{{ 'tools' }}{% set x = \"no tools here\" %}", False),          # string literals
    ("{{ message.tools }}{{ m['tools'] }}", False),                    # attributes and keys
    ("{% set available_tools = 1 %}{{ tools_list }}", False),        # other names
    ("{% raw %}{{ tools }}{% endraw %}", False),                       # raw text
    ("{%- raw -%}{{ tools }}{%- endraw -%}{{ tools }}", True),
    ("{{ '}}' }}{{ tools }}", True),                                   # a closing delimiter inside a string
    ("{{ 'unterminated", False),
    ("{% if x %}tools{% endif %}", False),
    (None, False),
])
def test_template_uses_tools(source, uses):
    assert template_uses_tools(source) is uses


# ------------------------------------------------------------------ check_tools

def test_check_tools_normalizes():
    out = check_tools(TOOLS)
    assert [t["type"] for t in out] == ["function"] * 3
    assert out[0] == WEATHER
    assert out[1] == {"type": "function", "function": SEARCH}
    assert out[2] == {"type": "function", "function": {
        "name": "now", "description": "", "parameters": {"type": "object", "properties": {}}}}
    out[0]["function"]["parameters"]["properties"]["city"]["type"] = "number"
    assert WEATHER["function"]["parameters"]["properties"]["city"]["type"] == "string"  # copies
    assert check_tools([]) == []
    assert check_tools([{"name": "x", "parameters": {}}])[0]["function"]["parameters"]["type"] == "object"


@pytest.mark.parametrize("tools, message", [
    ("get_weather", "a list"),
    ({"name": "x"}, "a list"),
    ([WEATHER, "now"], r"tools\[1\]: a tool must be a dict"),
    ([{"type": "retrieval"}], r"tools\[0\]: type must be 'function'"),
    ([{"type": "function", "function": "now"}], r"tools\[0\]: 'function' must be a dict"),
    ([{"type": "function", "function": {"description": "no name"}}], r"tools\[0\]\.function: name"),
    ([{"name": "has space"}], r"tools\[0\]: name"),
    ([{"name": "a" * 65}], r"tools\[0\]: name"),
    ([{"name": ""}], r"tools\[0\]: name"),
    ([{"name": "ünïcode"}], r"tools\[0\]: name"),
    ([{"name": "a"}, {"name": "b"}, {"type": "function", "function": {"name": "a"}}],
     r"tools\[2\]\.function: .*'a'.*earlier"),
    ([{"name": "a", "description": 5}], r"tools\[0\]: description"),
    ([{"name": "a", "parameters": "object"}], r"tools\[0\]: parameters must be a JSON schema"),
    ([{"name": "a", "parameters": {"type": "array", "items": {}}}], r"tools\[0\]: .*with type"),
    ([{"name": "a", "parameters": {"properties": {}}}], r"tools\[0\]: parameters must be a schema with type"),
    ([{"name": "a", "parameters": {"type": "object", "default": {1, 2}}}], r"tools\[0\]: parameters must be JSON"),
    ([{"name": "a", "parameters": {"type": "object", "minimum": float("nan")}}], r"tools\[0\]: parameters must be"),
])
def test_check_tools_errors(tools, message):
    with pytest.raises(ValueError, match=message):
        check_tools(tools)


# ------------------------------------------------------------------ the generic path

def test_generic_system_prompt():
    prompt = generic_system_prompt([WEATHER, CLOCK], "You are terse.")
    assert prompt.startswith("You are terse.\n\n# Tools\n")
    assert json.dumps({"name": "get_weather", "description": "Current weather in a city.",
                       "parameters": WEATHER["function"]["parameters"]}) in prompt
    assert '{"name": "now", "parameters": {"type": "object", "properties": {}}}' in prompt
    assert '<tool_call>\n{"name": "tool_name", "arguments": {"argument_name": "value"}}\n</tool_call>' in prompt
    assert generic_system_prompt([CLOCK], None).startswith("# Tools\n")
    assert generic_system_prompt([CLOCK], "  ").startswith("# Tools\n")
    with pytest.raises(ValueError, match=r"tools\[0\]"):
        generic_system_prompt([{"name": "bad name"}], None)


def conversation():
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome, and the time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call00001", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},   # OpenAI sends JSON text
            {"id": "call00002", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            ToolCall(id="call00003", name="now", arguments={}),
        ]},
        {"role": "tool", "tool_call_id": "call00001", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call00002", "name": "get_weather", "content": "21 C"},
        {"role": "tool", "tool_call_id": "call00003", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "user", "content": "Thanks! And Oslo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call00004", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "call00004", "content": "-3 C"},
    ]


def test_generic_messages():
    original = conversation()
    before = json.dumps([m for m in original if not any(isinstance(c, ToolCall) for c in m.get("tool_calls", []))])
    out = generic_messages(original)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert all(isinstance(m["content"], str) and "tool_calls" not in m for m in out)
    assert out[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
    assert out[3] == {"role": "user", "content": (
        "<tool_response>\n18 C, sunny\n</tool_response>\n<tool_response>\n21 C\n</tool_response>\n"
        "<tool_response>\n12:00\n</tool_response>\n\nThanks! And Oslo?")}
    assert out[4]["content"] == ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
                                 '\n</tool_call>')
    assert out[5] == {"role": "user", "content": "<tool_response>\n-3 C\n</tool_response>"}
    after = json.dumps([m for m in original if not any(isinstance(c, ToolCall) for c in m.get("tool_calls", []))])
    assert before == after  # the input is not changed


def test_generic_messages_leaves_plain_conversations_alone():
    msgs = [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    assert generic_messages(msgs) == msgs


def test_generic_messages_tool_results_after_a_user_message_join_it():
    msgs = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "r"}, {"role": "user", "content": "more"}]
    assert generic_messages(msgs) == [
        {"role": "user", "content": "hi\n\n<tool_response>\nr\n</tool_response>\n\nmore"}]


@pytest.mark.parametrize("calls", [
    "get_weather", {"name": "now"}, [5], [{"function": {"arguments": {}}}], [{"name": ""}],
])
def test_generic_messages_rejects_malformed_tool_calls(calls):
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        generic_messages([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": calls}])


# A template that insists on alternation, as many small models' templates do.
STRICT_TEMPLATE = """{%- for m in messages %}
{%- if m.role != 'system' and (m.role == 'user') != (loop.index0 % 2 == (1 if messages[0].role == 'system' else 0)) %}
{{- raise_exception('roles must alternate user/assistant') }}
{%- endif %}
{{- '<|' + m.role + '|>' + m.content + '\n' }}
{%- endfor %}"""


def _render(source, messages):
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)
    env = jinja2.Environment()
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages)


def test_generic_messages_keep_alternation():
    raw = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else ""}
           for m in conversation()]
    with pytest.raises(jinja2.exceptions.TemplateError, match="alternate"):
        _render(STRICT_TEMPLATE, raw)
    text = _render(STRICT_TEMPLATE, generic_messages(conversation()))
    assert "<|user|><tool_response>\n18 C, sunny\n</tool_response>" in text


def test_round_trip_through_the_generic_path():
    call = ToolCall(id="Ab3dE6gH9", name="get_weather", arguments={"city": "Zürich \"old\" town\n", "unit": "C"})
    rendered = generic_messages([{"role": "assistant", "content": "Looking.", "tool_calls": [call, call]}])
    content, calls = parse_tool_calls(rendered[0]["content"], "generic", TOOLS)
    assert content == "Looking."
    assert [(c.name, c.arguments) for c in calls] == [(call.name, call.arguments)] * 2
    assert all(c.id != call.id and ID_RE.fullmatch(c.id) for c in calls)  # a fresh id each time it is parsed
    assert calls[0].id != calls[1].id


def test_template_messages_give_templates_dict_arguments():
    out = template_messages(conversation())
    assert out[2]["content"] == ""
    assert out[2]["tool_calls"] == [
        {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "call00002", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        {"id": "call00003", "type": "function", "function": {"name": "now", "arguments": {}}},
    ]
    assert out[3] == conversation()[3]
    text = _render(MISTRAL_TEMPLATE, [dict(m, content=m["content"] if isinstance(m["content"], str) else "")
                                      for m in out]).replace("\n", "")
    assert '[TOOL_CALLS][{"function": {"arguments": {"city": "Paris"}' in text


# ------------------------------------------------------------------ streaming

@pytest.mark.parametrize("fmt, text, end", [
    ("hermes", "Sure, let me", 12),
    ("hermes", "Sure <tool", 5),
    ("hermes", "Sure <tool_call>\n{", 5),
    ("hermes", "  <tool_c", 0),
    ("hermes", "   ", 0),
    ("hermes", "a < b", 5),
    ("generic", ' {"na', 0),
    ("generic", "```", 0),
    ("generic", "```python\nx", 11),
    ("llama3", '{"name"', 0),
    ("llama3", "<|python", 0),
    ("llama3", "It is sunny.", 12),
    ("llama3", "Ok<|python_tag|>{", 2),
    ("mistral", "[TOOL", 0),
    ("mistral", "[", 0),
    ("mistral", "[x](y)", 6),
    ("mistral", "Sure.[TOOL_CALLS]", 5),
])
def test_content_end(fmt, text, end):
    assert content_end(text, fmt) == end


def test_call_prefix():
    assert call_prefix("hermes") == call_prefix("generic") == "<tool_call>"
    assert call_prefix("mistral") == "[TOOL_CALLS]"
    assert call_prefix("llama3") == "{"
    assert "<|python_tag|>" in tc.call_prefixes("llama3")


# ------------------------------------------------------------------ grammars

RULE_RE = re.compile(r"^([a-zA-Z0-9-]+)\s*::=", re.M)


@pytest.mark.parametrize("fmt", tc.FORMATS)
@pytest.mark.parametrize("parallel", [False, True])
def test_call_grammar_names_every_tool(fmt, parallel):
    grammar = call_grammar(TOOLS, fmt, parallel=parallel)
    assert grammar.strip()
    rules = RULE_RE.findall(grammar)
    assert "root" in rules
    assert len(rules) == len(set(rules))
    for name in ("get_weather", "web.search", "now"):
        assert name in grammar
    only = call_grammar(TOOLS, fmt, name="web.search", parallel=parallel)
    assert "web.search" in only and "get_weather" not in only


def test_call_grammar_errors():
    with pytest.raises(ValueError, match="no tool"):
        call_grammar(TOOLS, "hermes", name="missing")
    with pytest.raises(ValueError):
        call_grammar([], "hermes")
    with pytest.raises(ValueError):
        call_grammar(TOOLS, "xml")


def _grammar_type():
    from gbnf_matcher import Grammar  # a GBNF recognizer written for the tests

    return Grammar


VALID = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "llama3": '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "F"}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
}
VALID["generic"] = VALID["hermes"]
PARALLEL = {
    "hermes": VALID["hermes"] + '\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
    "llama3": VALID["llama3"] + '; {"name": "now", "parameters": {}}',
    "mistral": ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                '{"name": "now", "arguments": {}}]'),
}
PARALLEL["generic"] = PARALLEL["hermes"]
INVALID = [
    '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}\n</tool_call>',   # not its schema
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": 5}}\n</tool_call>',
    '<tool_call>\n{"name": "evil", "arguments": {}}\n</tool_call>',                        # unknown tool
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',                             # llama3's key is parameters
    'Sure! <tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',                   # text before the call
    '[TOOL_CALLS][]',
    '',
]


@pytest.mark.parametrize("fmt", tc.FORMATS)
def test_call_grammar_accepts_calls_and_nothing_else(fmt):
    Grammar = _grammar_type()
    single = Grammar(call_grammar(TOOLS, fmt))
    parallel = Grammar(call_grammar(TOOLS, fmt, parallel=True))
    assert single.accepts(VALID[fmt]) and parallel.accepts(VALID[fmt])
    assert parallel.accepts(PARALLEL[fmt])
    assert not single.accepts(PARALLEL[fmt])
    for text in INVALID + [VALID[fmt] + " ", "x" + VALID[fmt]]:
        assert not single.accepts(text), text
        assert not parallel.accepts(text), text
    assert not Grammar(call_grammar(TOOLS, fmt, name="now")).accepts(VALID[fmt])
    assert Grammar(call_grammar(TOOLS, fmt, name="get_weather")).accepts(VALID[fmt])


@pytest.mark.parametrize("fmt", tc.FORMATS)
def test_what_the_grammar_lets_through_the_parser_takes(fmt):
    Grammar = _grammar_type()
    rng = random.Random(7)
    for parallel in (False, True):
        grammar = Grammar(call_grammar(TOOLS, fmt, parallel=parallel))
        names = set()
        for _ in range(60):
            text = grammar.sample(rng)
            content, calls = parse_tool_calls(text, fmt, TOOLS)
            assert content == "" and calls, text
            assert parallel or len(calls) == 1, text
            for call in calls:
                names.add(call.name)
                if call.name == "get_weather":
                    assert isinstance(call.arguments["city"], str)
                    assert set(call.arguments) <= {"city", "unit"}
                    assert call.arguments.get("unit", "C") in ("C", "F")
                elif call.name == "web.search":
                    assert set(call.arguments) == {"query"}
                else:
                    assert call.arguments == {}
        assert names == {"get_weather", "web.search", "now"}


def test_call_grammar_names_the_tool_whose_schema_it_cannot_convert():
    tools = [CLOCK, {"name": "odd", "parameters": {"type": "object", "not": {"required": ["x"]}}}]
    with pytest.raises(ValueError, match=r"tools\[1\] \(odd\): parameters"):
        call_grammar(tools, "hermes")
    assert "now" in call_grammar(tools, "hermes", name="now")  # the other tool alone is fine
