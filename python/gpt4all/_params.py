"""The parameters of one generation, defined once.

``GenerationParams`` holds every setting of
``llmodel_generate_params`` with this package's defaults, checks them in one
place (raising ``InvalidArgumentError`` that names the parameter, before
anything native runs) and fills the native struct. ``LLModel`` and
``GPT4All.generate`` both take their defaults and their checks from it, and a
test holds the C library's ``llmodel_generate_default_params()`` to the same
defaults.

The ranges are those of ``GPT4All.generate``, a little narrower than what the
C library accepts where the C library has two spellings for one thing:
``top_k`` -1 (C: "<= 0, no cut") is ``0`` here, a negative ``temp`` (C:
"<= 0, greedy") is ``0``, a ``top_p`` above 1 is ``1``. Nothing the engine
can do is out of reach. The one wider range is ``n_predict``: ``-1`` (until
the end of the reply or a full context) has no other spelling, so it is
allowed here, and ``GPT4All.generate`` asks ``max_tokens >= 0`` itself.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional

from . import _native as native
from . import errors

#: The largest seed accepted: any integer from 0 to SEED_MAX is a seed (it is
#: reduced modulo ``SEED_RANDOM``, which itself means "a fresh seed").
SEED_MAX = 2**64
#: The largest magnitude a C float holds; a larger finite Python float would
#: become infinite on its way into the struct.
FLOAT_MAX = 3.4028234663852886e38


def check_int(name: str, value: Any, minimum: int, maximum: int = native.INT32_MAX) -> int:
    """value, if it is an int in [minimum, maximum]; else InvalidArgumentError.

    ctypes would cut a larger value to 32 bits without a word
    (2**32 + 3 tokens would become 3).
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidArgumentError(f"{name} must be an integer, not {value!r}")
    if value < minimum or value > maximum:
        raise errors.InvalidArgumentError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def check_number(name: str, value: Any, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 exclusive_min: bool = False) -> float:
    """value, if it is a finite number (that a C float holds) in range; else InvalidArgumentError."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise errors.InvalidArgumentError(f"{name} must be a finite number, not {value!r}")
    if abs(value) > FLOAT_MAX:
        raise errors.InvalidArgumentError(f"{name} must be at most {FLOAT_MAX:g} in size, not {value!r}")
    if minimum is not None and (value < minimum or (exclusive_min and value == minimum)):
        raise errors.InvalidArgumentError(
            f"{name} must be {'greater than' if exclusive_min else 'at least'} {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise errors.InvalidArgumentError(f"{name} must be at most {maximum}, not {value}")
    return value


def _check_logit_bias(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise errors.InvalidArgumentError(
            f"logit_bias must be a mapping of token ids to biases, not {type(value).__name__}")
    for token, bias in value.items():
        check_int("logit_bias token id", token, 0)
        if isinstance(bias, float) and bias == -math.inf:
            continue  # bans the token
        try:
            check_number(f"logit_bias[{token}]", bias)
        except errors.InvalidArgumentError as e:
            raise errors.InvalidArgumentError(f"{e} (-inf bans a token)") from None


@dataclass(frozen=True)
class GenerationParams:
    """The settings of one generation, with their defaults.

    Constructing one checks every value (``InvalidArgumentError`` names the
    parameter); the object cannot change afterwards (``logit_bias`` is kept
    as a read-only copy).

    Attributes:
        n_predict: the most tokens to generate; ``-1``: until the end of the
            reply or a full context.
        temp: randomness; ``0`` always picks the most likely token.
        top_k: sample only from the ``top_k`` most likely tokens; ``0``: no limit.
        top_p: sample only from the most likely tokens whose probabilities add
            up to ``top_p``; ``1`` turns it off.
        min_p: drop tokens less likely than ``min_p`` times the most likely one.
        repeat_penalty: how strongly recent tokens are avoided; ``1``: not at all.
        repeat_last_n: how many recent tokens the penalties look at; ``-1``:
            the whole context.
        frequency_penalty: subtracted from a token's logit once for each time
            it occurs in the window; ``0``: none.
        presence_penalty: subtracted once from the logit of every token in
            the window; ``0``: none.
        logit_bias: ``{token_id: bias}`` added to the tokens' logits before
            sampling; ``-inf`` bans a token.
        n_batch: prompt tokens per step; ``0``: the model's load ``n_batch``.
        seed: any integer from 0 to 2**64 for reproducible sampling; ``None``:
            a fresh seed each call.
        context_shift: when the context fills up while generating, drop the
            oldest tokens after the first ``n_keep`` instead of stopping.
        n_keep: tokens at the start that a shift never drops.
        special: for a text prompt, read special-token text such as
            ``<|im_end|>`` as that token.
        add_special: for a text prompt, add BOS as the tokenizer asks.
        reuse_shifted: also reuse cached tokens that follow a span the new
            prompt left out, shifting them into place.
        grammar: a grammar in llama.cpp's GBNF syntax (start rule ``root``)
            that the generated text must follow; ``None``: no constraint.
        grammar_root: the rule the grammar starts from; ``None``: ``root``.
    """

    n_predict: int = 200
    temp: float = 0.7
    top_k: int = 40
    top_p: float = 0.4
    min_p: float = 0.0
    repeat_penalty: float = 1.18
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Optional[Mapping[int, float]] = field(default=None, hash=False)
    n_batch: int = 0
    seed: Optional[int] = None
    context_shift: bool = True
    n_keep: int = 0
    special: bool = True
    add_special: bool = True
    reuse_shifted: bool = False
    grammar: Optional[str] = None
    grammar_root: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.logit_bias, Mapping):
            # a copy of the caller's mapping, so that it cannot change under us
            object.__setattr__(self, "logit_bias", MappingProxyType(dict(self.logit_bias)))
        self.validate()

    def validate(self) -> None:
        """Raises ``InvalidArgumentError``, naming the parameter, for a value
        of the wrong type or out of range."""
        check_int("n_predict", self.n_predict, -1)
        check_number("temp", self.temp, minimum=0.0)
        check_int("top_k", self.top_k, 0)
        check_number("top_p", self.top_p, minimum=0.0, maximum=1.0)
        check_number("min_p", self.min_p, minimum=0.0, maximum=1.0)
        check_number("repeat_penalty", self.repeat_penalty, minimum=0.0, exclusive_min=True)
        check_int("repeat_last_n", self.repeat_last_n, -1)
        check_number("frequency_penalty", self.frequency_penalty)
        check_number("presence_penalty", self.presence_penalty)
        if self.logit_bias is not None:
            _check_logit_bias(self.logit_bias)
        check_int("n_batch", self.n_batch, 0)
        if self.seed is not None:
            check_int("seed", self.seed, 0, SEED_MAX)
        check_int("n_keep", self.n_keep, 0)
        if self.grammar is not None and not isinstance(self.grammar, str):
            raise errors.InvalidArgumentError(f"grammar must be a str, not {type(self.grammar).__name__}")
        if self.grammar_root is not None and not isinstance(self.grammar_root, str):
            raise errors.InvalidArgumentError(f"grammar_root must be a str, not {type(self.grammar_root).__name__}")

    def to_native(self, lib: ctypes.CDLL) -> "native.GenerateParams":
        """The native ``llmodel_generate_params`` for these settings.

        Starts from the library's defaults (so a field added to the struct
        later keeps its C default) and sets every field this class knows.
        The logit-bias array is owned by the returned struct (ctypes keeps
        it alive as long as the struct): keep the struct referenced for the
        whole native call.
        """
        p = lib.llmodel_generate_default_params()
        p.n_predict = self.n_predict
        p.temp = self.temp
        p.top_k = self.top_k
        p.top_p = self.top_p
        p.min_p = self.min_p
        p.repeat_penalty = self.repeat_penalty
        p.repeat_last_n = self.repeat_last_n
        p.frequency_penalty = self.frequency_penalty
        p.presence_penalty = self.presence_penalty
        if self.logit_bias:
            p.logit_bias = (native.LogitBias * len(self.logit_bias))(*self.logit_bias.items())
            p.n_logit_bias = len(self.logit_bias)
        else:
            p.logit_bias = None
            p.n_logit_bias = 0
        p.n_batch = self.n_batch
        # any int is a seed; SEED_RANDOM itself is never one a caller gets by accident
        p.seed = native.SEED_RANDOM if self.seed is None else self.seed % native.SEED_RANDOM
        p.context_shift = bool(self.context_shift)
        p.n_keep = self.n_keep
        p.parse_special = bool(self.special)
        p.add_special = bool(self.add_special)
        p.reuse_shifted = bool(self.reuse_shifted)
        # the struct keeps the bytes alive (ctypes holds what a c_char_p field is given)
        p.grammar = self.grammar.encode("utf-8", "surrogatepass") if self.grammar else None
        p.grammar_root = self.grammar_root.encode() if self.grammar_root else None
        return p


__all__ = ["GenerationParams", "check_int", "check_number", "SEED_MAX"]
