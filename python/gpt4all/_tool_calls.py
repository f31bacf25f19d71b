"""Tool calling for chat models: the part that is plain text and dicts.

Tools come in OpenAI's function shape. A model writes its calls in the format
its chat template taught it; the formats known here are

``hermes``
    ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` blocks,
    possibly after some text (Hermes, Qwen 2/2.5/3 and many others).
``llama3``
    the whole reply is ``{"name": ..., "parameters": {...}}``, possibly after
    ``<|python_tag|>``, several calls separated by ``;`` (Llama 3.1-3.3).
``mistral``
    ``[TOOL_CALLS]`` and a JSON array of ``{"name", "arguments"}`` objects
    (v0.3), or the newer ``[TOOL_CALLS]name[ARGS]{...}``.
``generic``
    for templates that know nothing of tools: the tools are described in the
    system prompt (`generic_system_prompt`), earlier calls and results are
    written into the messages as text (`generic_messages`), and the model is
    asked for hermes blocks.

Model output is hostile input: parsing never raises on it, and a call that is
not exactly a call to a known tool with a JSON object of arguments stays in
the content. Only the standard library is imported at import time.
"""
from __future__ import annotations

import copy
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

FORMATS = ("hermes", "llama3", "mistral", "generic")

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_CALLS = "[TOOL_CALLS]"

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 9  # Mistral's templates reject any other length


# ------------------------------------------------------------------ calls

@dataclass(frozen=True)
class ToolCall:
    """One call of a tool, as parsed from a model's reply."""

    id: str
    name: str
    arguments: Dict[str, Any] = field(hash=False)

    def to_message_dict(self) -> Dict[str, Any]:
        """The call as an entry of an assistant message's ``tool_calls``
        (arguments as a dict, which is what chat templates expect)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": copy.deepcopy(self.arguments)}}

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON string OpenAI's wire format carries."""
        return json.dumps(self.arguments, ensure_ascii=False)


def new_call_id(taken: Optional[Set[str]] = None) -> str:
    """A fresh call id: 9 random letters and digits, not in ``taken`` (which
    it is added to)."""
    while True:
        call_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
        if taken is None:
            return call_id
        if call_id not in taken:
            taken.add(call_id)
            return call_id


# ------------------------------------------------------------------ tools

def _invalid(message: str) -> ValueError:
    from . import errors  # the package's own error type, a ValueError; imported late to keep imports stdlib-only

    return errors.InvalidArgumentError(message)


CHOICES = ("auto", "none", "required")


def tool_choice_mode(choice: Any, tools: Sequence[Mapping[str, Any]]) -> str:
    """A tool_choice (``"auto"``, ``"none"``, ``"required"``, a tool's name, or
    OpenAI's ``{"type": "function", "function": {"name": ...}}``) as
    ``"auto"``, ``"none"``, ``"required"`` or ``"function:NAME"``, for checked
    ``tools``; ``InvalidArgumentError`` (a ValueError) naming the problem."""
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise _invalid("tool_choice as a dict must be {'type': 'function', 'function': {'name': ...}}")
        choice = name
    if not isinstance(choice, str):
        raise _invalid(f"tool_choice must be a str or a dict, not {type(choice).__name__}")
    if choice in CHOICES:
        return choice
    names = [t["function"]["name"] for t in tools]
    if choice not in names:
        raise _invalid(f"tool_choice {choice!r} is neither 'auto', 'none', 'required' nor one of the tools: "
                       f"{', '.join(names) or '(none)'}")
    return "function:" + choice


def forced_tool(mode: str) -> Optional[str]:
    """The tool a `tool_choice_mode` forces ("function:NAME"), else None."""
    return mode[len("function:"):] if mode.startswith("function:") else None


def check_tools(tools: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Validates tools and returns normalized copies.

    Each tool is ``{"type": "function", "function": {"name", "description"?,
    "parameters"?}}`` or the bare ``{"name", "description"?, "parameters"?}``.
    The copies are always in the first shape, with a ``description`` (maybe
    empty) and ``parameters`` (an empty object schema when none was given).
    Raises ``ValueError`` (``InvalidArgumentError``) naming the tool's index.
    """
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise _invalid("tools must be a list of tools")
    out: List[Dict[str, Any]] = []
    seen: Set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise _invalid(f"{where}: a tool must be a dict, got {type(tool).__name__}")
        if "function" in tool or "type" in tool:
            if tool.get("type", "function") != "function":
                raise _invalid(f"{where}: type must be 'function', got {tool.get('type')!r}")
            fn = tool.get("function")
            if not isinstance(fn, Mapping):
                raise _invalid(f"{where}: 'function' must be a dict with the tool's name")
            where += ".function"
        else:
            fn = tool
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise _invalid(f"{where}: name must be 1 to 64 letters, digits, '_', '.' or '-', got {name!r}")
        if name in seen:
            raise _invalid(f"{where}: the name {name!r} is used by an earlier tool")
        seen.add(name)
        description = fn.get("description")
        if description is None:
            description = ""
        elif not isinstance(description, str):
            raise _invalid(f"{where}: description must be a string")
        params = fn.get("parameters")
        if params is None or (isinstance(params, Mapping) and not params):
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, Mapping):
            raise _invalid(f"{where}: parameters must be a JSON schema (a dict)")
        elif params.get("type") != "object":
            raise _invalid(f"{where}: parameters must be a schema with type 'object', got type {params.get('type')!r}")
        try:
            # A JSON round trip both checks that the schema is JSON and copies it deeply.
            params = json.loads(json.dumps(params, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as e:
            raise _invalid(f"{where}: parameters must be JSON data ({e})") from None
        function: Dict[str, Any] = {"name": name, "description": description, "parameters": params}
        if isinstance(fn.get("strict"), bool):
            function["strict"] = fn["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tools_by_name(tools: Sequence[Mapping[str, Any]]) -> Dict[str, Mapping[str, Any]]:
    """Name -> function dict, for tools in either shape (already checked or not:
    parsing must not raise, so malformed entries are skipped)."""
    out: Dict[str, Mapping[str, Any]] = {}
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            continue
        inner = tool.get("function")
        fn: Mapping[str, Any] = inner if isinstance(inner, Mapping) else tool
        name = fn.get("name")
        if isinstance(name, str):
            out[name] = fn
    return out


# ------------------------------------------------------------------ templates

# A string literal (possibly unterminated), a tag's end, or a run of other code.
_CODE_TOKEN = re.compile(r"""'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|%}|}}|[^'"%}]+|[%}]""", re.S)
_TAG_START = re.compile(r"\{[{%#]")
_RAW_START = re.compile(r"\s*raw\s*-?$")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_TOOLS_NAME = re.compile(r"(?<![\w.])tools(?!\w)")


def _jinja_code(source: str) -> Iterator[str]:
    """The code inside each ``{{ }}`` and ``{% %}`` tag of a template, with
    string literals left out (comments and raw blocks are skipped)."""
    pos, n = 0, len(source)
    while pos < n:
        m = _TAG_START.search(source, pos)
        if not m:
            return
        kind = source[m.start() + 1]
        if kind == "#":
            end = source.find("#}", m.end())
            if end < 0:
                return
            pos = end + 2
            continue
        close = "}}" if kind == "{" else "%}"
        code: List[str] = []
        p = m.end()
        while p < n:
            t = _CODE_TOKEN.match(source, p)
            assert t is not None  # the pattern matches any character
            tok = t.group()
            p = t.end()
            if tok == close:
                break
            if tok[0] in "'\"":
                code.append(" ")  # a literal: its text is not code
            else:
                code.append(tok)
        text = "".join(code)
        yield text
        pos = p
        if kind == "%" and _RAW_START.match(text.lstrip("-+")):
            raw_end = _RAW_END.search(source, pos)
            if not raw_end:
                return
            pos = raw_end.end()


def template_uses_tools(template_source: Optional[str]) -> bool:
    """Whether a Jinja chat template reads the ``tools`` variable: the name
    ``tools`` in an expression or statement (not in text, a string literal, a
    comment, nor as an attribute such as ``message.tools``)."""
    if not template_source:
        return False
    return any(_TOOLS_NAME.search(code) for code in _jinja_code(template_source))


def detect_format(template_source: Optional[str]) -> str:
    """The tool-call format a model with this chat template writes.

    A template that does not read ``tools`` (or no template) gives
    ``"generic"``; otherwise the markers in its source decide: ``[TOOL_CALLS]``
    or ``[AVAILABLE_TOOLS]`` for ``"mistral"``, ``<tool_call>`` for
    ``"hermes"``, ``<|python_tag|>``, ``Environment: ipython`` or
    ``parameters`` next to ``<|eom_id|>``/``ipython`` for ``"llama3"``. A
    template that reads ``tools`` in some other format is ``"generic"`` too:
    render it without tools and describe them in the system prompt instead.
    """
    if not template_uses_tools(template_source):
        return "generic"
    assert template_source is not None
    src = template_source
    if MISTRAL_CALLS in src or "[AVAILABLE_TOOLS]" in src:
        return "mistral"
    if TOOL_CALL_OPEN in src:
        return "hermes"
    if PYTHON_TAG in src or "Environment: ipython" in src or (
            "parameters" in src and ("<|eom_id|>" in src or "ipython" in src)):
        return "llama3"
    return "generic"


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise _invalid(f"unknown tool call format {fmt!r}; expected one of {', '.join(FORMATS)}")


# ------------------------------------------------------------------ the generic path

def generic_system_prompt(tools: Sequence[Mapping[str, Any]], system_prompt: Optional[str]) -> str:
    """``system_prompt`` with a section that lists the tools and says how to
    call them (hermes ``<tool_call>`` blocks). Tools are checked first."""
    lines: List[str] = []
    for tool in check_tools(tools):
        fn = tool["function"]
        entry: Dict[str, Any] = {"name": fn["name"]}
        if fn["description"]:
            entry["description"] = fn["description"]
        entry["parameters"] = fn["parameters"]
        lines.append(json.dumps(entry, ensure_ascii=False))
    section = (
        "# Tools\n\n"
        "You may call these tools, described as JSON:\n"
        + "\n".join(lines) + "\n\n"
        "To call a tool, write a <tool_call> block holding a JSON object with the tool's name and its arguments, "
        "like this:\n"
        + TOOL_CALL_OPEN + '\n{"name": "tool_name", "arguments": {"argument_name": "value"}}\n' + TOOL_CALL_CLOSE + "\n"
        "Write one block for each call. The results come back in " + TOOL_RESPONSE_OPEN + " blocks. "
        "When no tool is needed, answer directly."
    )
    if system_prompt and system_prompt.strip():
        return system_prompt.rstrip() + "\n\n" + section
    return section


def _content_text(content: Any) -> str:
    """A message content as text: strings as they are, OpenAI's list of text
    parts joined, ``None`` empty, anything else as JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and all(isinstance(p, Mapping) for p in content):
        return "".join(str(p.get("text", "")) for p in content if p.get("type", "text") == "text")
    try:
        return json.dumps(content, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(content)


def _message_call(call: Any, where: str) -> Tuple[str, Any]:
    """(name, arguments) of an entry of an assistant message's ``tool_calls``:
    a `ToolCall`, OpenAI's ``{"function": {"name", "arguments"}}`` (arguments a
    dict or JSON text) or a bare ``{"name", "arguments"}``."""
    if isinstance(call, ToolCall):
        return call.name, call.arguments
    if not isinstance(call, Mapping):
        raise _invalid(f"{where} must be a dict")
    inner = call.get("function")
    fn: Mapping[str, Any] = inner if isinstance(inner, Mapping) else call
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.function.name must be a non-empty string")
    args = fn.get("arguments")
    if args is None:
        args = {}
    elif isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            pass  # not JSON: it is shown to the model as the string it is
    return name, args


def format_tool_calls(calls: Sequence[Any]) -> str:
    """Calls as hermes blocks, one per call, separated by newlines: what the
    generic path shows the model of its earlier calls, and what
    `call_grammar` makes it write."""
    blocks = []
    for i, call in enumerate(calls):
        name, args = _message_call(call, f"tool_calls[{i}]")
        body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        blocks.append(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")
    return "\n".join(blocks)


def generic_messages(messages: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Messages for a template that knows nothing of tools.

    An assistant message's ``tool_calls`` become hermes blocks after its text;
    a ``tool`` message becomes ``<tool_response>`` text in a user message.
    Consecutive tool results share one user message, and a user message next
    to them joins it, so templates that insist on user/assistant alternation
    still render. Other messages are copied as they are.
    """
    out: List[Dict[str, Any]] = []
    # Whether out[-1] is a user message that ends with tool results.
    after_results = False
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise _invalid(f"messages[{i}] must be a dict")
        role = m.get("role")
        if role == "tool":
            block = f"{TOOL_RESPONSE_OPEN}\n{_content_text(m.get('content'))}\n{TOOL_RESPONSE_CLOSE}"
            if out and out[-1].get("role") == "user":
                prev = _content_text(out[-1].get("content"))
                out[-1]["content"] = prev + ("\n" if after_results else "\n\n") + block if prev else block
            else:
                out.append({"role": "user", "content": block})
            after_results = True
            continue
        if role == "user" and after_results:
            text = _content_text(m.get("content"))
            if text:
                out[-1]["content"] = out[-1]["content"] + "\n\n" + text
            after_results = False
            continue
        after_results = False
        msg = dict(m)
        if role == "assistant" and m.get("tool_calls"):
            calls = m["tool_calls"]
            if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
                raise _invalid(f"messages[{i}].tool_calls must be a list")
            blocks = format_tool_calls([_checked_entry(c, f"messages[{i}].tool_calls[{j}]")
                                        for j, c in enumerate(calls)])
            text = _content_text(m.get("content")).rstrip()
            msg["content"] = text + "\n" + blocks if text else blocks
            del msg["tool_calls"]
        out.append(msg)
    return out


def _checked_entry(call: Any, where: str) -> Any:
    _message_call(call, where)  # raises with the message's position when malformed
    return call


def template_messages(messages: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Messages for a template that renders tools itself: copies in which each
    assistant ``tool_calls`` entry is ``{"id", "type": "function", "function":
    {"name", "arguments": <dict>}}`` (OpenAI clients send the arguments as
    JSON text; templates write them with ``tojson`` and want the dict)."""
    out: List[Dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise _invalid(f"messages[{i}] must be a dict")
        msg = dict(m)
        calls = m.get("tool_calls")
        if m.get("role") == "assistant" and calls:
            if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
                raise _invalid(f"messages[{i}].tool_calls must be a list")
            entries = []
            for j, c in enumerate(calls):
                name, args = _message_call(c, f"messages[{i}].tool_calls[{j}]")
                call_id = c.id if isinstance(c, ToolCall) else c.get("id")
                entry: Dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
                if call_id is not None:
                    entry["id"] = call_id
                entries.append(entry)
            msg["tool_calls"] = entries
            if msg.get("content") is None:
                msg["content"] = ""
        out.append(msg)
    return out


# ------------------------------------------------------------------ parsing

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# A failed decode costs time in proportion to the text before it (the error
# counts lines), so after this many markers that start no call the rest of a
# reply is content: a model looping on broken calls must not make parsing slow.
_MAX_FAILED_MARKERS = 64
_WS = re.compile(r"\s*")
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?")


def _skip_ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m else pos


def _decode(text: str, pos: int) -> Optional[Tuple[Any, int]]:
    """The JSON value at ``pos`` and where it ends, or None (never raises)."""
    try:
        return _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return None


def _arguments(value: Any) -> Optional[Dict[str, Any]]:
    """Arguments as a dict: a JSON object, or JSON text of one; missing or
    null ones are no arguments. None when they are anything else."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        if not value.strip():
            return {}
        decoded = _decode(value, _skip_ws(value, 0))
        if decoded and isinstance(decoded[0], dict) and not value[decoded[1]:].strip():
            return decoded[0]
    return None


def _call(obj: Any, known: Mapping[str, Any], taken: Set[str]) -> Optional[ToolCall]:
    """A `ToolCall` from a decoded ``{"name", "arguments" | "parameters"}``
    object (or OpenAI's ``{"function": {...}}``), or None when it is not a
    call to a known tool."""
    if not isinstance(obj, dict):
        return None
    if "name" not in obj and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or name not in known:
        return None
    args = _arguments(obj["arguments"] if "arguments" in obj else obj.get("parameters"))
    if args is None:
        return None
    return ToolCall(id=new_call_id(taken), name=name, arguments=args)


def _calls(value: Any, known: Mapping[str, Any], taken: Set[str]) -> Optional[List[ToolCall]]:
    """Calls from one decoded object or a non-empty list of them (all must be calls)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        return None
    calls = []
    for item in items:
        call = _call(item, known, taken)
        if call is None:
            return None
        calls.append(call)
    return calls


def _decode_fenced(text: str, pos: int) -> Optional[Tuple[Any, int]]:
    """Like `_decode` after whitespace, but also inside a Markdown code fence
    (small models like to fence their JSON)."""
    pos = _skip_ws(text, pos)
    if not text.startswith("```", pos):
        return _decode(text, pos)
    m = _FENCE.match(text, pos)
    assert m is not None
    decoded = _decode(text, _skip_ws(text, m.end()))
    if decoded is None:
        return None
    end = _skip_ws(text, decoded[1])
    if not text.startswith("```", end):
        return None
    return decoded[0], end + 3


def _parse_hermes(text: str, known: Mapping[str, Any], taken: Set[str], bare: bool) -> Tuple[str, List[ToolCall]]:
    pieces: List[str] = []
    calls: List[ToolCall] = []
    kept = 0  # text[kept:] is not yet in pieces
    pos = failures = 0
    while failures < _MAX_FAILED_MARKERS:
        start = text.find(TOOL_CALL_OPEN, pos)
        if start < 0:
            break
        pos = start + len(TOOL_CALL_OPEN)
        failures += 1  # until this marker turns out to start a call
        decoded = _decode_fenced(text, pos)
        if decoded is None:
            continue
        # A marker inside this JSON value is inside a string: no call starts
        # there, and not scanning it again keeps the parse linear.
        pos = end = _skip_ws(text, decoded[1])
        if text.startswith(TOOL_CALL_CLOSE, end):
            end += len(TOOL_CALL_CLOSE)
        elif end != len(text):  # only the very end may lack the closing tag (the reply was cut short)
            continue
        found = _calls(decoded[0], known, taken)
        if found is None:
            continue
        failures -= 1
        pieces.append(text[kept:start])
        calls.extend(found)
        kept = pos = end
    if not calls and bare:
        # The generic path's models were never taught the tags: a reply that
        # is nothing but a call object (or a list of them) is a call too.
        decoded = _decode_fenced(text, 0)
        if decoded is not None and not text[decoded[1]:].strip():
            found = _calls(decoded[0], known, taken)
            if found:
                return "", found
        return text, []
    if not calls:
        return text, []
    pieces.append(text[kept:])
    return "".join(pieces).strip(), calls


def _parse_llama3(text: str, known: Mapping[str, Any], taken: Set[str]) -> Tuple[str, List[ToolCall]]:
    tag = text.find(PYTHON_TAG)
    if tag >= 0:
        before, pos = text[:tag], tag + len(PYTHON_TAG)
    else:
        # Without the tag, a call is the whole reply: JSON inside prose is content.
        before, pos = "", _skip_ws(text, 0)
        if not text.startswith("{", pos):
            return text, []
    calls: List[ToolCall] = []
    while True:
        pos = _skip_ws(text, pos)
        decoded = _decode(text, pos)
        call = _call(decoded[0], known, taken) if decoded else None
        if call is None or decoded is None:
            break
        calls.append(call)
        after = _skip_ws(text, decoded[1])
        if not text.startswith(";", after):
            pos = after
            break
        pos = after + 1
    if not calls:
        return text, []
    return (before + text[pos:]).strip(), calls


_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z0-9_.-]{1,64})(?:\[CALL_ID\][A-Za-z0-9]*)?\[ARGS\]")


def _parse_mistral(text: str, known: Mapping[str, Any], taken: Set[str]) -> Tuple[str, List[ToolCall]]:
    pieces: List[str] = []
    calls: List[ToolCall] = []
    kept = pos = failures = 0
    while failures < _MAX_FAILED_MARKERS:
        start = text.find(MISTRAL_CALLS, pos)
        if start < 0:
            break
        pos = start + len(MISTRAL_CALLS)
        failures += 1  # until this marker turns out to start a call
        at = _skip_ws(text, pos)
        found: List[ToolCall] = []
        end = pos
        if text.startswith(("[", "{"), at):  # v0.3: a JSON array of calls (or one object)
            decoded = _decode(text, at)
            got = _calls(decoded[0], known, taken) if decoded else None
            if decoded:
                pos = decoded[1]  # (as for hermes) markers inside the value are in strings
            if got and decoded:
                found, end = got, decoded[1]
        else:  # newer: name[ARGS]{...}, maybe several in a row
            cursor = pos
            while True:
                m = _MISTRAL_NAMED.match(text, cursor)
                if not m or m.group(1) not in known:
                    break
                decoded = _decode(text, _skip_ws(text, m.end()))
                args = _arguments(decoded[0]) if decoded and isinstance(decoded[0], (dict, str)) else None
                if args is None or decoded is None:
                    break
                found.append(ToolCall(id=new_call_id(taken), name=m.group(1), arguments=args))
                cursor = end = decoded[1]
        if not found:
            continue
        failures -= 1
        pieces.append(text[kept:start])
        calls.extend(found)
        kept = pos = end
    if not calls:
        # A template rendered without its control tokens loses [TOOL_CALLS]:
        # a reply that is nothing but the array is still the calls.
        at = _skip_ws(text, 0)
        if text.startswith("[", at):
            decoded = _decode(text, at)
            if decoded and isinstance(decoded[0], list) and not text[decoded[1]:].strip():
                found = _calls(decoded[0], known, taken) or []
                if found:
                    return "", found
        return text, []
    pieces.append(text[kept:])
    return "".join(pieces).strip(), calls


def parse_tool_calls(text: str, fmt: str, tools: Sequence[Mapping[str, Any]]) -> Tuple[str, List[ToolCall]]:
    """Splits a model's reply into its content and its tool calls.

    Only a call to one of ``tools`` with a JSON object of arguments (or JSON
    text of one) counts; anything else stays in the content, as written. When
    there are calls, the content is what is left around them, stripped; when
    there are none, it is ``text`` unchanged. Never raises on the reply. Each
    call gets a fresh 9-character id, unique within the reply.
    """
    _check_format(fmt)
    if not isinstance(text, str):
        raise _invalid("text must be a string")
    known = _tools_by_name(tools)
    if not known:
        return text, []
    taken: Set[str] = set()
    if fmt == "llama3":
        return _parse_llama3(text, known, taken)
    if fmt == "mistral":
        return _parse_mistral(text, known, taken)
    return _parse_hermes(text, known, taken, bare=fmt == "generic")


# ------------------------------------------------------------------ streaming

def call_prefix(fmt: str) -> str:
    """The text a reply starts with when it is a call in format ``fmt``
    (`call_prefixes` lists every such start)."""
    return call_prefixes(fmt)[0]


def call_prefixes(fmt: str) -> Tuple[str, ...]:
    """Every start (after whitespace) that makes a reply a call in format ``fmt``."""
    _check_format(fmt)
    return {
        "hermes": (TOOL_CALL_OPEN,),
        "generic": (TOOL_CALL_OPEN, "{", "```json"),  # the generic parser also takes a bare call object
        "llama3": ("{", PYTHON_TAG),
        "mistral": (MISTRAL_CALLS, "[{"),
    }[fmt]


def _markers(fmt: str) -> Tuple[str, ...]:
    """Text that starts a call anywhere in a reply."""
    return {"hermes": (TOOL_CALL_OPEN,), "generic": (TOOL_CALL_OPEN,), "llama3": (PYTHON_TAG,),
            "mistral": (MISTRAL_CALLS,)}[fmt]


def content_end(text: str, fmt: str) -> int:
    """While a reply streams: how many of its leading characters are content
    for sure, that is, come before anything that is or may still become a
    call. Stream ``text[:content_end(text, fmt)]``, hold the rest, and once
    the reply is complete let `parse_tool_calls` decide (its content may
    differ from what was streamed by surrounding whitespace)."""
    _check_format(fmt)
    head = text.lstrip()
    for prefix in call_prefixes(fmt):
        if head.startswith(prefix) or prefix.startswith(head):
            return 0
    end = len(text)
    for marker in _markers(fmt):
        at = text.find(marker)
        if at >= 0:
            end = min(end, at)
            continue
        # A marker may be arriving: hold back a tail that could begin one.
        for k in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:k]):
                end = min(end, len(text) - k)
                break
    return end


# ------------------------------------------------------------------ grammars

def _rule_hint(name: str) -> str:
    """A GBNF rule name hint from a tool name (rule names are [a-zA-Z0-9-]+)."""
    return re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "tool"


def call_grammar(tools: Sequence[Mapping[str, Any]], fmt: str, *, name: Optional[str] = None,
                 parallel: bool = False) -> str:
    """A GBNF grammar (llama.cpp) that makes the reply exactly one call (or,
    with ``parallel``, one or more) in format ``fmt`` to one of ``tools``
    (only to ``name`` when given), its arguments matching the tool's schema.

    ``hermes``/``generic``: ``<tool_call>\\n{"name": "<name>", "arguments":
    <args>}\\n</tool_call>`` blocks separated by ``\\n``; ``llama3``:
    ``{"name": "<name>", "parameters": <args>}`` separated by ``; ``;
    ``mistral``: ``[TOOL_CALLS][{"name": "<name>", "arguments": <args>}, ...]``.
    """
    from ._json_schema import GrammarBuilder  # imported on first use: it is not needed to parse

    _check_format(fmt)
    chosen = [(i, t) for i, t in enumerate(check_tools(tools)) if name is None or t["function"]["name"] == name]
    if not chosen:
        raise _invalid(f"no tool is named {name!r}" if name is not None
                       else "a grammar for tool calls needs at least one tool")
    b = GrammarBuilder()
    key = "parameters" if fmt == "llama3" else "arguments"
    alternatives = []
    for i, tool in chosen:
        fn = tool["function"]
        hint = _rule_hint(fn["name"])
        schema = fn["parameters"]
        if schema.get("properties") == {} and not schema.get("required") and "additionalProperties" not in schema:
            # The converter reads ``properties`` without ``additionalProperties``
            # as "these keys only", except when there are none: then any object
            # goes. For a tool declared without parameters, no keys is right.
            schema = dict(schema, additionalProperties=False)
        try:
            args = b.schema_rule(schema, hint + "-args")
        except ValueError as e:  # a schema the converter cannot turn into a grammar
            raise _invalid(f"tools[{i}] ({fn['name']}): parameters: {e}") from e
        head = b.literal('{"name": ' + json.dumps(fn["name"]) + ', "' + key + '": ')
        alternatives.append(b.add_rule(hint + "-call", f"{head} {args} {b.literal('}')}"))
    call = b.add_rule("call", " | ".join(alternatives))
    if fmt in ("hermes", "generic"):
        open_tag, close_tag = b.literal(TOOL_CALL_OPEN + "\n"), b.literal("\n" + TOOL_CALL_CLOSE)
        one = b.add_rule("block", f"{open_tag} {call} {close_tag}")
        sep = b.literal("\n")
    elif fmt == "llama3":
        one, sep = call, b.literal("; ")
    else:
        one, sep = call, b.literal(", ")
    body = f"{one} ({sep} {one})*" if parallel else one
    if fmt == "mistral":
        body = f"{b.literal(MISTRAL_CALLS + '[')} {body} {b.literal(']')}"
    grammar: str = b.gbnf(body)
    return grammar
