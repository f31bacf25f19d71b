"""GenerationParams: the one definition of the generation parameters, their
defaults and their checks, shared by LLModel and GPT4All.generate. None of
these tests needs the native library."""
from __future__ import annotations

import dataclasses
import gc
import inspect
import math

import pytest

from gpt4all import GPT4All, InvalidArgumentError
from gpt4all import _native as native
from gpt4all._params import GenerationParams


class FakeLib:
    """Stands in for the library: to_native() only asks it for the default struct."""

    @staticmethod
    def llmodel_generate_default_params():
        return native.GenerateParams()


def test_the_defaults():
    p = GenerationParams()
    assert dataclasses.asdict(p) == dict(
        n_predict=200, temp=0.7, top_k=40, top_p=0.4, min_p=0.0, repeat_penalty=1.18, repeat_last_n=64,
        frequency_penalty=0.0, presence_penalty=0.0, logit_bias=None, n_batch=0, seed=None, context_shift=True,
        n_keep=0, special=True, add_special=True, reuse_shifted=False, grammar=None, grammar_root=None)


def test_gpt4all_generate_takes_its_defaults_from_generation_params():
    sig = inspect.signature(GPT4All.generate).parameters
    for arg, field in [("max_tokens", "n_predict"), ("temp", "temp"), ("top_k", "top_k"), ("top_p", "top_p"),
                       ("min_p", "min_p"), ("repeat_penalty", "repeat_penalty"),
                       ("repeat_last_n", "repeat_last_n"), ("seed", "seed")]:
        assert sig[arg].default == getattr(GenerationParams(), field), arg
        assert sig[arg].kind is inspect.Parameter.KEYWORD_ONLY
    # the original's own default, kept for compatibility
    assert sig["n_batch"].default == 8
    # the signature people read shows numbers
    assert "temp: 'float' = 0.7" in str(inspect.signature(GPT4All.generate))


@pytest.mark.parametrize("kwargs", [
    {"n_predict": -2}, {"n_predict": 2**31}, {"n_predict": 1.0}, {"n_predict": True},
    {"temp": -0.1}, {"temp": math.nan}, {"temp": math.inf}, {"temp": "hot"}, {"temp": 1e39},
    {"top_k": -1}, {"top_k": 2**31}, {"top_p": -0.1}, {"top_p": 1.5}, {"min_p": 2}, {"min_p": -1},
    {"repeat_penalty": 0}, {"repeat_penalty": -1.0}, {"repeat_last_n": -2}, {"repeat_last_n": 2**32},
    {"frequency_penalty": math.nan}, {"presence_penalty": -math.inf}, {"n_batch": -1}, {"n_batch": 2**31},
    {"seed": -1}, {"seed": 2**64 + 1}, {"seed": 1.5}, {"n_keep": -1}, {"n_keep": 2**31},
])
def test_a_bad_value_is_refused_naming_its_parameter(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(InvalidArgumentError, match=name):
        GenerationParams(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"n_predict": -1}, {"n_predict": 0}, {"temp": 0}, {"temp": 2}, {"top_k": 0}, {"top_p": 0}, {"top_p": 1},
    {"min_p": 1.0}, {"repeat_penalty": 1e-6}, {"repeat_last_n": -1}, {"frequency_penalty": -2.0},
    {"presence_penalty": 2}, {"seed": 0}, {"seed": 2**64}, {"n_batch": 2**31 - 1},
])
def test_edge_values_are_accepted(kwargs):
    GenerationParams(**kwargs)


@pytest.mark.parametrize("bias", [
    [(1, 2.0)], {-1: 1.0}, {2**31: 1.0}, {"1": 1.0}, {True: 1.0}, {1: math.nan}, {1: math.inf}, {1: "x"},
    {1: 1e39},
])
def test_a_bad_logit_bias_is_refused(bias):
    with pytest.raises(InvalidArgumentError, match="logit_bias"):
        GenerationParams(logit_bias=bias)


def test_logit_bias_reaches_the_struct_and_stays_alive():
    p = GenerationParams(logit_bias={5: -1.5, 7: -math.inf, 2**31 - 1: 3}).to_native(FakeLib)
    gc.collect()
    assert p.n_logit_bias == 3
    assert [(p.logit_bias[i].token, p.logit_bias[i].bias) for i in range(3)] == [
        (5, -1.5), (7, -math.inf), (2**31 - 1, 3.0)]
    for empty in (None, {}):
        q = GenerationParams(logit_bias=empty).to_native(FakeLib)
        assert not q.logit_bias and q.n_logit_bias == 0


def test_the_object_cannot_change():
    bias = {1: 1.0}
    p = GenerationParams(logit_bias=bias)
    bias[2] = 2.0  # the caller's mapping is copied
    assert dict(p.logit_bias) == {1: 1.0}
    with pytest.raises(TypeError):
        p.logit_bias[3] = 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temp = 1.0
    assert hash(p) == hash(GenerationParams(logit_bias={1: 1.0})) and p == GenerationParams(logit_bias={1: 1.0})
    with pytest.raises(InvalidArgumentError, match="temp"):
        dataclasses.replace(p, temp=-1)  # replace() checks too


def test_to_native_sets_each_field():
    p = GenerationParams(n_predict=-1, temp=0, top_k=0, top_p=1, min_p=0.05, repeat_penalty=1.1, repeat_last_n=-1,
                         frequency_penalty=0.5, presence_penalty=-0.25, n_batch=32, seed=42, context_shift=False,
                         n_keep=4, special=False, add_special=False, reuse_shifted=True).to_native(FakeLib)
    assert (p.n_predict, p.temp, p.top_k, p.top_p, p.repeat_last_n, p.n_batch, p.seed, p.n_keep) == (
        -1, 0.0, 0, 1.0, -1, 32, 42, 4)
    assert p.min_p == pytest.approx(0.05) and p.repeat_penalty == pytest.approx(1.1)
    assert (p.frequency_penalty, p.presence_penalty) == (0.5, -0.25)
    assert (p.context_shift, p.parse_special, p.add_special, p.reuse_shifted) == (False, False, False, True)


@pytest.mark.parametrize("seed, native_seed", [
    (None, native.SEED_RANDOM), (0, 0), (native.SEED_RANDOM - 1, native.SEED_RANDOM - 1),
    (native.SEED_RANDOM, 0), (2**63, 2**63 % native.SEED_RANDOM), (2**64, 2**64 % native.SEED_RANDOM),
])
def test_any_seed_is_reduced_and_never_becomes_the_random_one_by_accident(seed, native_seed):
    assert GenerationParams(seed=seed).to_native(FakeLib).seed == native_seed


def _bare_gpt4all() -> GPT4All:
    """A GPT4All with no model: enough for checks that run before the model is touched."""
    return GPT4All.__new__(GPT4All)


@pytest.mark.parametrize("kwargs", [
    {"max_tokens": -1}, {"n_predict": -1}, {"max_tokens": 2**32 + 3}, {"temp": -1}, {"top_k": -5},
    {"top_k": -1}, {"top_p": 1.5}, {"min_p": -0.5}, {"repeat_penalty": 0}, {"repeat_last_n": -2},
    {"n_batch": 0}, {"n_batch": 2**33}, {"seed": -5}, {"seed": 2**70},
])
def test_gpt4all_generate_refuses_before_touching_the_model(kwargs):
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        _bare_gpt4all().generate("hi", **kwargs)


def test_gpt4all_generate_passes_generation_params_to_the_model():
    seen = {}

    class Model:
        closed = False

        def generate(self, prompt, on_token=None, **params):
            seen.update(params, prompt=prompt)
            GenerationParams(**params)  # what LLModel does with them

    g = _bare_gpt4all()
    g.model = Model()
    assert g.generate("hi", max_tokens=5, temp=0, seed=2**64, n_batch=8) == ""
    assert seen.pop("prompt") == "hi"
    assert seen == dataclasses.asdict(GenerationParams(
        n_predict=5, temp=0, seed=2**64, n_keep=1, special=False, add_special=True, reuse_shifted=False))
