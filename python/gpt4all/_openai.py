"""OpenAI's HTTP API, the request side: checks a request body and turns it
into what the model runs with; and the error shape OpenAI's clients read.

Nothing here does I/O: ``server.py`` calls it and sends what it returns.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple


class APIError(Exception):
    """An error to send as OpenAI's ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: Optional[str], message: str, code: Optional[str] = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# ------------------------------------------------------------ field checks

def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad(name, f"'{name}' must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise bad(name, f"'{name}' must be between {lo:g} and {hi:g}, got {v!r}")
    return float(v)


def _integer(body: Mapping[str, Any], name: str, lo: int, hi: int) -> Optional[int]:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(name, f"'{name}' must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise bad(name, f"'{name}' must be between {lo} and {hi}, got {v}")
    return v


def _flag(body: Mapping[str, Any], name: str) -> bool:
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad(name, f"'{name}' must be true or false, got {v!r}")
    return v


def _stops(body: Mapping[str, Any]) -> List[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v) or len(v) > 4:
        raise bad("stop", "'stop' must be a string or a list of at most 4 strings")
    return [s for s in v if s]


def _refuse(body: Mapping[str, Any], names: Sequence[str], why: str) -> None:
    for name in names:
        v = body.get(name)
        if v not in (None, False, [], {}):
            raise bad(name, f"'{name}' is not supported by this server ({why})", code="unsupported_parameter")


# ------------------------------------------------------------ requests

@dataclass
class Sampling:
    """What a completion request asks of the sampler and of the reply."""

    max_tokens: Optional[int]
    params: Dict[str, Any]
    stops: List[str]
    stream: bool
    include_usage: bool


def sampling(body: Mapping[str, Any], n_ctx: int) -> Sampling:
    """The sampling fields shared by chat and text completions."""
    n = _integer(body, "n", 1, 128)
    if n not in (None, 1):
        raise bad("n", "only n=1 is supported", code="unsupported_parameter")
    _refuse(body, ("logprobs", "top_logprobs"), "log probabilities are not returned")
    max_tokens = _integer(body, "max_completion_tokens", 1, 1 << 30)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, 1 << 30)
    params: Dict[str, Any] = {
        # OpenAI's sampler: temperature and nucleus sampling alone, no repeat penalty
        "temp": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0),
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "presence_penalty": _number(body, "presence_penalty", 0.0, -2.0, 2.0),
        "frequency_penalty": _number(body, "frequency_penalty", 0.0, -2.0, 2.0),
    }
    seed = _integer(body, "seed", -(1 << 63), (1 << 64) - 1)
    if seed is not None:
        params["seed"] = seed % 0xFFFFFFFF  # the engine takes 32 bits (0xFFFFFFFF means random)
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise bad("logit_bias", "'logit_bias' must be an object of token ids to numbers")
        try:
            params["logit_bias"] = {int(k): float(v) for k, v in bias.items()}
        except (TypeError, ValueError):
            raise bad("logit_bias", "'logit_bias' must map token ids to numbers") from None
        if not all(-100 <= v <= 100 and math.isfinite(v) for v in params["logit_bias"].values()):
            raise bad("logit_bias", "'logit_bias' values must be between -100 and 100")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise bad("stream_options", "'stream_options' must be an object, and only with stream=true")
    include_usage = bool(options and options.get("include_usage"))
    return Sampling(max_tokens, params, _stops(body), stream, include_usage)


@dataclass
class ChatRequest:
    messages: List[Dict[str, Any]]
    sampling: Sampling
    grammar: Optional[str] = None  # from response_format
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: str = "none"  # "auto", "none", "required" or "function:NAME"


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _content(i: int, message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad(f"messages[{i}].content", f"messages[{i}]: only text content is supported, not {kind!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"messages[{i}].content", f"messages[{i}].content must be a string or a list of text parts")


def _response_format(fmt: Any) -> Optional[str]:
    """The grammar for response_format, or None for text."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise bad("response_format", "'response_format' must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        from ._json_schema import JSON_OBJECT_GBNF

        return JSON_OBJECT_GBNF
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad("response_format.json_schema",
                      "'response_format.json_schema' must be an object with a 'name' and a 'schema'")
        from . import errors
        from .gpt4all import schema_grammar

        try:
            return schema_grammar(spec.get("schema", {}))
        except errors.GrammarError as e:
            raise bad("response_format.json_schema.schema", str(e)) from None
    raise bad("response_format", f"response_format type must be 'text', 'json_object' or 'json_schema', not {kind!r}")


def _tools(body: Mapping[str, Any]) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """The request's tools, checked, and its tool_choice as "auto", "none",
    "required" or "function:NAME"."""
    raw, choice = body.get("tools"), body.get("tool_choice")
    if raw is None or raw == []:
        if choice not in (None, "none"):
            raise bad("tool_choice", "'tool_choice' needs 'tools'")
        return None, "none"
    if not isinstance(raw, list):
        raise bad("tools", "'tools' must be a list")
    from ._tool_calls import check_tools, tool_choice_mode

    try:
        tools = check_tools(raw)
    except ValueError as e:
        raise bad("tools", str(e)) from None
    try:
        return tools, tool_choice_mode("auto" if choice is None else choice, tools)
    except ValueError as e:
        raise bad("tool_choice", str(e)) from None


def _tool_calls(i: int, calls: Any) -> List[Dict[str, Any]]:
    """An assistant message's tool_calls, with the arguments parsed."""
    if not isinstance(calls, list):
        raise bad(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls must be a list")
    out = []
    for j, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls[{j}] must have a function with a name")
        args = fn.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise bad(f"messages[{i}].tool_calls",
                          f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON") from None
        if not isinstance(args, dict):
            raise bad(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls[{j}]: the arguments must be an object")
        call_id = c.get("id")
        out.append({"id": call_id if isinstance(call_id, str) else f"call{j}", "type": "function",
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def chat_request(body: Mapping[str, Any], n_ctx: int) -> ChatRequest:
    _refuse(body, ("functions", "function_call", "audio", "modalities", "prediction"),
            "use 'tools'; no audio")
    grammar = _response_format(body.get("response_format"))
    tools, choice = _tools(body)
    if grammar is not None and choice not in ("none", "auto"):
        raise bad("response_format", "a response_format cannot be combined with a required tool call")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("messages", "'messages' must be a non-empty list")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}]", f"messages[{i}] must be an object")
        role = m.get("role")
        if role not in _ROLES:
            raise bad(f"messages[{i}].role", f"messages[{i}].role must be one of system, developer, user, "
                                             f"assistant, tool, got {role!r}")
        message: Dict[str, Any] = {"role": _ROLES[role], "content": _content(i, m)}
        if role == "assistant" and m.get("tool_calls"):
            message["tool_calls"] = _tool_calls(i, m["tool_calls"])
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise bad(f"messages[{i}].tool_call_id", f"messages[{i}] (a tool message) needs a 'tool_call_id'")
            message["tool_call_id"] = call_id
            if isinstance(m.get("name"), str):
                message["name"] = m["name"]
        messages.append(message)
    return ChatRequest(messages, sampling(body, n_ctx), grammar, tools, choice)


@dataclass
class TextRequest:
    prompt: str
    sampling: Sampling
    echo: bool = False


def text_request(body: Mapping[str, Any], n_ctx: int) -> TextRequest:
    _refuse(body, ("suffix", "best_of"), "not supported for this model")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "'prompt' must be a string (or a list of one string)")
    return TextRequest(prompt, sampling(body, n_ctx), _flag(body, "echo"))


@dataclass
class EmbeddingRequest:
    texts: List[str]
    single: bool
    dimensions: Optional[int]
    base64: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


def embedding_request(body: Mapping[str, Any]) -> EmbeddingRequest:
    v = body.get("input")
    single = isinstance(v, str)
    texts = [v] if single else v
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad("input", "'input' must be a non-empty string or a non-empty list of strings "
                           "(token arrays are not supported)")
    if any(not t for t in texts):
        raise bad("input", "'input' must not contain empty strings")
    if len(texts) > 2048:
        raise bad("input", "'input' may hold at most 2048 texts")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad("encoding_format", "'encoding_format' must be 'float' or 'base64'")
    return EmbeddingRequest(texts, single, _integer(body, "dimensions", 1, 1 << 16), fmt == "base64")


def model_name(body: Mapping[str, Any]) -> Optional[str]:
    v = body.get("model")
    if v is not None and not isinstance(v, str):
        raise bad("model", "'model' must be a string")
    return v


def finish_reason(stop_reason: Optional[str], stopped_by_text: bool) -> str:
    """OpenAI's finish_reason for the engine's stop reason."""
    if stopped_by_text or stop_reason in ("eog", "callback", "no_allowed_token", None):
        return "stop"
    return "length"  # length, context_full; cancelled replies are not sent


def usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}

