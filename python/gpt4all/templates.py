"""Chat prompt formatting: the model's own Jinja chat template, or the
original package's ``"{0}"`` prompt templates.

Jinja templates come from the GGUF file (``tokenizer.chat_template``) and are
rendered in a sandbox, as Hugging Face renders them: with ``messages``,
``add_generation_prompt`` and the ``bos_token``/``eos_token`` strings.
"""
from __future__ import annotations

import datetime
from functools import lru_cache
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import errors

Message = Dict[str, str]


def _raise_exception(message: str) -> None:
    raise errors.InvalidArgumentError(f"the chat template refused the conversation: {message}")


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    import jinja2.sandbox  # imported on first use: keeps `import gpt4all` cheap

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise errors.InvalidArgumentError(f"the model's chat template is not valid Jinja: {e}") from e


def render_jinja(source: str, messages: Sequence[Mapping[str, str]], *, bos_token: str, eos_token: str,
                 add_generation_prompt: bool = True) -> str:
    """Renders a Jinja chat template for messages."""
    return _compile(source).render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                                   bos_token=bos_token, eos_token=eos_token)


def check_prompt_template(template: str) -> None:
    """Refuses what the original package refused in a ``"{0}"`` template."""
    if "%1" in template:
        raise errors.InvalidArgumentError(
            "Prompt template containing a literal '%1' is not supported. For a prompt placeholder, "
            "please use '{0}' instead.")
    if "{0}" not in template:
        raise errors.InvalidArgumentError("a prompt template must contain '{0}' where the prompt goes")


def render_legacy(template: str, messages: Sequence[Mapping[str, str]]) -> str:
    """Formats a conversation with a ``"{0}"`` prompt template.

    The system prompt comes first, then each user turn through the template
    followed by the assistant's reply.
    """
    parts: List[str] = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            parts.append(content)
        elif role == "user":
            parts.append(template.replace("{0}", content))
        else:
            parts.append(content + "\n")
    return "".join(parts)


class ChatFormatter:
    """Formats a conversation for one model, with its template or a legacy one."""

    def __init__(self, jinja_source: Optional[str], prompt_template: Optional[str], bos_token: str, eos_token: str):
        if prompt_template is not None:
            check_prompt_template(prompt_template)
        elif not jinja_source:
            raise errors.InvalidArgumentError(
                "this model has no chat template in its metadata; pass prompt_template= to chat_session, "
                "e.g. '### User:\\n{0}\\n### Assistant:\\n'")
        self.jinja_source = jinja_source
        self.prompt_template = prompt_template
        self.bos_token = bos_token
        self.eos_token = eos_token

    def format(self, messages: Sequence[Mapping[str, str]]) -> str:
        if self.prompt_template is not None:
            return render_legacy(self.prompt_template, messages)
        assert self.jinja_source is not None
        return render_jinja(self.jinja_source, messages, bos_token=self.bos_token, eos_token=self.eos_token)
