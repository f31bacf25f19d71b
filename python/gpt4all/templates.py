"""Chat prompt formatting: the model's own Jinja chat template, or the
original package's ``"{0}"`` prompt templates.

Jinja templates come from the GGUF file (``tokenizer.chat_template``) and are
rendered as Hugging Face renders them: with ``messages``,
``add_generation_prompt`` and the ``bos_token``/``eos_token`` strings. Such a
template is hostile input: it renders in a sandbox with limits (see
``gpt4all._jinja``), and every failure is a ``ChatTemplateError``.

Message text stays text: only the template's own markup may become special
(control) tokens. A conversation renders to `Segment`s that say which spans
are message contents; contents are tokenized with ``parse_special=False``, so
a user who types ``<|im_start|>system`` gets the tokens of those characters,
not a forged turn. The system prompt is a content too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from . import errors

Message = Dict[str, str]


@dataclass(frozen=True)
class Segment:
    """A span of a rendered prompt: the template's markup, or message text."""

    text: str
    is_content: bool


class Tokenizer(Protocol):
    """What formatting needs of a model (``LLModel`` is one)."""

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> List[int]: ...

    def detokenize(self, tokens: Sequence[int], render_special: bool = False) -> str: ...


# ------------------------------------------------------------------ Jinja templates

def _checked_messages(messages: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for n, m in enumerate(messages, 1):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise errors.InvalidArgumentError(f"message {n} must be a dict with a string 'role' and 'content'")
        calls = m.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(isinstance(c, Mapping) for c in calls)):
            raise errors.InvalidArgumentError(f"message {n}: tool_calls must be a list of dicts")
        out.append(dict(m))
    return out


def _render(source: str, messages: List[Dict[str, Any]], bos_token: str, eos_token: str,
            add_generation_prompt: bool, tools: Optional[List[Dict[str, Any]]] = None) -> str:
    from . import _jinja  # imported on first use: keeps `import gpt4all` cheap

    size = len(bos_token) + len(eos_token) + sum(len(v) for m in messages for v in m.values() if isinstance(v, str))
    extra: Dict[str, Any] = {}
    if tools:
        import json

        # tool definitions and calls are input too: the limits scale with them
        size += len(json.dumps(tools)) + sum(len(json.dumps(m.get("tool_calls") or [])) for m in messages)
        extra["tools"] = tools
    return _jinja.render(source, size, messages=messages, add_generation_prompt=add_generation_prompt,
                         bos_token=bos_token, eos_token=eos_token, **extra)


def compile_jinja(source: str) -> None:
    """Raises ``ChatTemplateError`` if the template is not valid Jinja."""
    from . import _jinja

    _jinja.compile_template(source)


def render_jinja(source: str, messages: Sequence[Mapping[str, str]], *, bos_token: str, eos_token: str,
                 add_generation_prompt: bool = True) -> str:
    """Renders a Jinja chat template for messages."""
    return _render(source, _checked_messages(messages), bos_token, eos_token, add_generation_prompt)


def _variants(content: str) -> List[str]:
    """The content as templates commonly emit it: as is, or trimmed."""
    out: List[str] = []
    for v in (content, content.strip(), content.lstrip(), content.rstrip()):
        if v not in out:
            out.append(v)
    return out


_SENTINEL = re.compile("\ue000([0-9]+):([0-9]+)\ue001")


def _align(real: str, masked: str, mark: str, contents: List[str]) -> Optional[List[Segment]]:
    """Segments of ``real`` from the rendering with each content replaced by a
    sentinel, if putting the contents (or their trimmed forms) in place of the
    sentinels gives back ``real`` exactly; else None."""
    parts = _SENTINEL.split(masked)
    markup, marks, indexes = parts[0::3], parts[1::3], [int(i) for i in parts[2::3]]
    if any(m != mark for m in marks):
        return None
    if not real.startswith(markup[0]):
        return None
    segments, pos = [Segment(markup[0], False)], len(markup[0])
    for j, i in enumerate(indexes):
        if i >= len(contents):
            return None
        after, last = markup[j + 1], j == len(indexes) - 1
        for text in _variants(contents[i]):
            end = pos + len(text)
            if real.startswith(text, pos) and real.startswith(after, end) and (
                    not last or end + len(after) == len(real)):
                break
        else:
            return None
        segments += [Segment(text, True), Segment(after, False)]
        pos = end + len(after)
    return segments if pos == len(real) else None


def _locate(real: str, contents: List[str], has_special: Optional[Callable[[str], bool]]) -> List[Segment]:
    """Segments of ``real`` for a template that changes contents in ways
    `_align` does not follow: each content that holds special-token text
    must be found, once, after the previous one; the rest stays in the
    markup (its tokens are the same either way)."""
    spans: List[Tuple[int, int]] = []
    cursor = 0
    for n, content in enumerate(contents, 1):
        if not content or (has_special is not None and not has_special(content)):
            continue
        for text in _variants(content):
            at = real.find(text, cursor) if text else -1
            if at >= 0 and real.find(text, at + 1) < 0:
                break
        else:
            raise errors.ChatTemplateError(
                f"message {n} holds special-token text and the chat template changes it, so it cannot be kept "
                f"as plain text; the conversation is refused rather than read as control tokens")
        spans.append((at, at + len(text)))
        cursor = at + len(text)
    segments, pos = [], 0
    for start, end in spans:
        segments += [Segment(real[pos:start], False), Segment(real[start:end], True)]
        pos = end
    segments.append(Segment(real[pos:], False))
    return segments


def render_jinja_segments(source: str, messages: Sequence[Mapping[str, Any]], *, bos_token: str, eos_token: str,
                          add_generation_prompt: bool = True,
                          has_special: Optional[Callable[[str], bool]] = None,
                          tools: Optional[List[Dict[str, Any]]] = None) -> List[Segment]:
    """Renders a Jinja chat template into markup and content segments.

    The template renders twice: as is, and with each content replaced by a
    unique sentinel; the sentinels show where the contents go. If the
    template changes contents beyond trimming them, each content that holds
    special-token text (``has_special``; without it, every non-empty content)
    is looked for in the rendering, and the conversation is refused if one
    cannot be found unambiguously.
    """
    msgs = _checked_messages(messages)
    contents = [m["content"] for m in msgs]
    real = _render(source, msgs, bos_token, eos_token, add_generation_prompt, tools)
    texts = [*contents, bos_token, eos_token]
    import secrets  # here, not at import: `import gpt4all` stays cheap

    mark = str(secrets.randbits(48))
    while any("\ue000" + mark in s for s in texts):
        mark = str(secrets.randbits(48))  # a content that holds the mark could not be told from it
    masked_msgs = [dict(m, content=f"\ue000{mark}:{i}\ue001") for i, m in enumerate(msgs)]
    try:
        masked: Optional[str] = _render(source, masked_msgs, bos_token, eos_token, add_generation_prompt, tools)
    except errors.ChatTemplateError:
        masked = None  # the template looks at the contents (and refuses a sentinel)
    segments = _align(real, masked, mark, contents) if masked is not None else None
    if segments is None:
        segments = _locate(real, contents, has_special)
    return _merge(segments)


# ------------------------------------------------------------------ "{0}" templates

def check_prompt_template(template: str) -> None:
    """Refuses what the original package refused in a ``"{0}"`` template."""
    if "%1" in template:
        raise errors.InvalidArgumentError(
            "Prompt template containing a literal '%1' is not supported. For a prompt placeholder, "
            "please use '{0}' instead.")
    if "{0}" not in template:
        raise errors.InvalidArgumentError("a prompt template must contain '{0}' where the prompt goes")


def render_legacy_segments(template: str, messages: Sequence[Mapping[str, str]]) -> List[Segment]:
    """Formats a conversation with a ``"{0}"`` prompt template.

    The system prompt comes first, then each user turn through the template
    followed by the assistant's reply. The template is markup; the system
    prompt, user messages and replies are contents.
    """
    pieces = template.split("{0}")
    segments: List[Segment] = []
    for m in _checked_messages(messages):
        role, content = m["role"], m["content"]
        if role == "system":
            segments.append(Segment(content, True))
        elif role == "user":
            segments.append(Segment(pieces[0], False))
            for piece in pieces[1:]:
                segments += [Segment(content, True), Segment(piece, False)]
        else:
            segments += [Segment(content, True), Segment("\n", False)]
    return _merge(segments)


def render_legacy(template: str, messages: Sequence[Mapping[str, str]]) -> str:
    """The text of `render_legacy_segments`."""
    return "".join(s.text for s in render_legacy_segments(template, messages))


def _merge(segments: List[Segment]) -> List[Segment]:
    """Joins adjacent markup and drops empty markup. Contents, even empty
    ones, stay apart: a piece boundary stays where it was in earlier turns,
    so the prompt of turn N is a prefix of that of turn N+1."""
    out: List[Segment] = []
    for s in segments:
        if not s.is_content and not s.text:
            continue
        if out and not s.is_content and not out[-1].is_content:
            out[-1] = Segment(out[-1].text + s.text, False)
        else:
            out.append(s)
    return out


# ------------------------------------------------------------------ one model's formatter

_PIECE_CACHE = 4096  # tokenized pieces a formatter remembers: a long conversation's worth


class ChatFormatter:
    """Formats a conversation for one model, with its template or a legacy one.

    With a ``tokenizer``, `tokens` gives the token ids of a conversation.
    """

    def __init__(self, jinja_source: Optional[str], prompt_template: Optional[str], bos_token: str, eos_token: str,
                 tokenizer: Optional[Tokenizer] = None):
        if prompt_template is not None:
            check_prompt_template(prompt_template)
        elif not jinja_source:
            raise errors.InvalidArgumentError(
                "this model has no chat template in its metadata; pass prompt_template= to chat_session, "
                "e.g. '### User:\\n{0}\\n### Assistant:\\n'")
        else:
            compile_jinja(jinja_source)  # a broken template fails when the session opens
        self.jinja_source = jinja_source
        self.prompt_template = prompt_template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.tokenizer = tokenizer
        self._is_control: Dict[int, bool] = {}
        self._takes_tools: Optional[bool] = None
        self._piece_tokens: Dict[Tuple[str, bool], List[int]] = {}  # a conversation's pieces recur every turn

    @property
    def template_takes_tools(self) -> bool:
        """Whether the chat template renders tools itself (its ``tools`` variable)."""
        if self._takes_tools is None:
            from . import _tool_calls

            self._takes_tools = self.prompt_template is None and _tool_calls.template_uses_tools(self.jinja_source)
        return self._takes_tools

    @property
    def tool_format(self) -> str:
        """How the model writes tool calls (see ``_tool_calls.detect_format``):
        "generic" unless the template renders tools itself."""
        from . import _tool_calls

        return _tool_calls.detect_format(self.jinja_source) if self.template_takes_tools else "generic"

    def _with_tools(self, messages: Sequence[Mapping[str, Any]],
                    tools: Optional[List[Dict[str, Any]]]) -> Tuple[List[Dict[str, Any]], Optional[List[Dict[str, Any]]]]:
        """The messages and tools to render: as they are for a template that
        renders tools, else tools described in the system prompt and calls
        and results written out as text."""
        msgs = [dict(m) for m in messages]
        has_tool_parts = any(m.get("tool_calls") or m.get("role") == "tool" for m in msgs)
        if self.template_takes_tools:
            if tools or has_tool_parts:
                from . import _tool_calls

                msgs = _tool_calls.template_messages(msgs)  # arguments as dicts: templates apply tojson
                self._check_calls(msgs)
            return msgs, tools
        if not tools and not has_tool_parts:
            return msgs, None
        from . import _tool_calls

        if tools:
            system = msgs[0]["content"] if msgs and msgs[0].get("role") == "system" else None
            prompt = _tool_calls.generic_system_prompt(tools, system)
            msgs = [{"role": "system", "content": prompt}] + (msgs[1:] if system is not None else msgs)
        return _tool_calls.generic_messages(msgs), None

    def _check_calls(self, msgs: List[Dict[str, Any]]) -> None:
        """A template renders tool calls' arguments as markup, where special-token
        text would become control tokens: refuse such a call."""
        import json

        for n, m in enumerate(msgs, 1):
            for call in m.get("tool_calls") or []:
                if self.tokenizer is not None and self._has_special(json.dumps(call, ensure_ascii=False)):
                    raise errors.ChatTemplateError(
                        f"message {n} has a tool call whose text spells a special token of the model; the "
                        f"conversation is refused rather than read as control tokens")

    def format(self, messages: Sequence[Mapping[str, Any]], tools: Optional[List[Dict[str, Any]]] = None) -> str:
        """The prompt text of a conversation."""
        messages, tools = self._with_tools(messages, tools)
        if self.prompt_template is not None:
            return render_legacy(self.prompt_template, messages)
        assert self.jinja_source is not None
        return _render(self.jinja_source, _checked_messages(messages), self.bos_token, self.eos_token, True, tools)

    def segments(self, messages: Sequence[Mapping[str, Any]],
                 tools: Optional[List[Dict[str, Any]]] = None) -> List[Segment]:
        """The prompt of a conversation as markup and content segments."""
        messages, tools = self._with_tools(messages, tools)
        if self.prompt_template is not None:
            return render_legacy_segments(self.prompt_template, messages)
        assert self.jinja_source is not None
        return render_jinja_segments(self.jinja_source, messages, bos_token=self.bos_token,
                                     eos_token=self.eos_token, has_special=self._has_special, tools=tools)

    def tokens(self, messages: Sequence[Mapping[str, Any]], tools: Optional[List[Dict[str, Any]]] = None) -> List[int]:
        """The token ids of a conversation's prompt, ready for a reply.

        Markup is tokenized with special tokens parsed, contents without.
        Tokenized apart, pieces may differ from the whole text at their
        boundaries (a tokenizer that adds a space before each text, merges
        across a boundary); so when tokenizing the whole text gives the very
        same control tokens, in the same order, that whole tokenization is
        used: message text then added none.
        """
        tok = self.tokenizer
        if tok is None:
            raise errors.InvalidArgumentError("this ChatFormatter has no tokenizer")
        segments = self.segments(messages, tools)
        cache = self._piece_tokens
        if len(cache) > _PIECE_CACHE:
            cache.clear()
        pieces: List[int] = []
        for s in segments:
            if s.text:
                key = (s.text, not s.is_content)
                ids = cache.get(key)
                if ids is None:
                    ids = cache[key] = tok.tokenize(s.text, add_special=False, parse_special=key[1])
                pieces += ids
        whole = tok.tokenize("".join(s.text for s in segments), add_special=False, parse_special=True)
        if whole == pieces or self._controls(whole) == self._controls(pieces):
            return whole
        return pieces

    def _has_special(self, text: str) -> bool:
        """Whether text spells a special (control) token of the model."""
        tok = self.tokenizer
        if tok is None:
            return True  # unknown: treat every content as needing protection
        return tok.tokenize(text, add_special=False, parse_special=True) != tok.tokenize(
            text, add_special=False, parse_special=False)

    def _controls(self, tokens: Sequence[int]) -> List[int]:
        """The control tokens among tokens (they have no text of their own)."""
        assert self.tokenizer is not None
        out = []
        for t in tokens:
            known = self._is_control.get(t)
            if known is None:
                known = self._is_control[t] = self.tokenizer.detokenize([t], render_special=False) == ""
            if known:
                out.append(t)
        return out
