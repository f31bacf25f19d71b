"""Malformed model files must never take the process down.

Mutated copies of the real test model (header fields, metadata keys, values
and types, tensor infos, data, truncations) are loaded and, when one loads,
used for a short greedy generation. A file may load and run, or be refused
with a gpt4all error; a signal (SIGABRT, SIGSEGV, ...), a hang, an
``internal error`` from the library or any other exception is a failure that
names the seed and the mutation.

The files are made and tried in a child process, several per child: the
child reports each file before it tries it, so a crash is pinned on the file
that caused it (and the next child goes on after it). The corpus is seeded:
GGUF_FUZZ_SEED and GGUF_FUZZ_N change the seed and the number of mutations.
Write one mutated file, to try by hand, with

    python tests/test_gguf_fuzz.py show SEED INDEX OUT.gguf [MODEL.gguf]
"""
from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gguf_file as G  # noqa: E402

SEED = int(os.environ.get("GGUF_FUZZ_SEED", "20240601"))
N_MUTATIONS = int(os.environ.get("GGUF_FUZZ_N", "300"))
N_GEMMA_MUTATIONS = int(os.environ.get("GGUF_FUZZ_N_GEMMA", "30"))
FILE_TIMEOUT = 90.0  # seconds one file may take to load and generate
PROMPT = "Hello"
N_PREDICT = 3
LLAMA_MAX_LAYERS = 512  # llama.cpp's src/llama-hparams.h

# --------------------------------------------------------------------------
# mutations


@dataclass
class Mutation:
    name: str  # what was done, with the values chosen
    write: Callable[[Path], None]


class Skip(Exception):
    """The mutation drawn does not apply to this file: another is drawn."""


INT_TYPES = (G.UINT8, G.INT8, G.UINT16, G.INT16, G.UINT32, G.INT32, G.UINT64, G.INT64)
FLOAT_TYPES = (G.FLOAT32, G.FLOAT64)
INT_BITS = {G.UINT8: 8, G.INT8: 8, G.UINT16: 16, G.INT16: 16, G.UINT32: 32, G.INT32: 32, G.UINT64: 64, G.INT64: 64}
ARCHES = ["llama", "gemma3", "qwen2", "qwen3", "phi3", "gpt2", "bert", "mamba", "rwkv6", "rwkv7", "t5", "falcon",
          "starcoder2", "gemma", "gemma2", "olmo", "mpt", "bloom", "gptneox", "stablelm", "deepseek2", "clip",
          "wavtokenizer-dec", "llama4", "jamba", "granite", "exaone", "gpt-oss", "lfm2", "nemotron_h", "no-such-arch",
          ""]
TOKENIZERS = ["llama", "gpt2", "bert", "t5", "rwkv", "plamo2", "gemma4", "test", "none", "no_vocab", "whitespace",
              "hybriddna", "", "bogus"]
PRE_TOKENIZERS = ["default", "llama3", "qwen2", "gpt-2", "smollm", "deepseek-llm", "kimi-k2", "gemma4", "", "bogus"]


def interesting_int(rng: random.Random, bits: int, current: int) -> int:
    top = (1 << bits) - 1
    return rng.choice([0, 1, 2, 3, top, top - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1, current + 1, current - 1,
                       current * 2, current // 2, LLAMA_MAX_LAYERS, LLAMA_MAX_LAYERS + 1, 1025, 1 << 16, 1 << 31,
                       rng.randrange(0, top + 1), rng.randrange(0, 64)]) & top


def interesting_float(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, -1.0, -1e-5, 1e-45, 1e-38, 3e38, 1e30, float("nan"), float("inf"), float("-inf"),
                       1.0, 0.5, 1e6, rng.uniform(-10, 10)])


def interesting_string(rng: random.Random, current: str) -> object:
    return rng.choice(["", " ", "x" * 300, current + current, current[:1], b"\xff\xfe\x80",
                       b"ab\x00cd", "\u2581", "none", "llama", rng.choice(ARCHES), rng.choice(TOKENIZERS)])


def value_for(rng: random.Random, type_: int, current: object) -> object:
    if type_ in INT_TYPES:
        return interesting_int(rng, INT_BITS[type_], current if isinstance(current, int) else 0)
    if type_ in FLOAT_TYPES:
        return interesting_float(rng)
    if type_ == G.BOOL:
        return rng.choice([0, 1, 2, 255])
    if type_ == G.STRING:
        return interesting_string(rng, current if isinstance(current, str) else "")
    raise Skip()


def fmt(v: object) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (bytes, str)):
        r = repr(v)
        return r if len(r) < 40 else r[:37] + "..."
    if isinstance(v, list):
        return "[%d items]" % len(v)
    return str(v)


def arch_keys(g: G.GGUFFile) -> List[Tuple[str, int, object]]:
    """Keys llama.cpp reads that the file may lack, with a type and a value."""
    a = g.arch
    n_layer = g.get(a + ".block_count", 30)
    return [
        (a + ".expert_count", G.UINT32, 8), (a + ".expert_used_count", G.UINT32, 2),
        (a + ".expert_count", G.UINT32, 1025), (a + ".expert_used_count", G.UINT32, 9),
        (a + ".expert_group_count", G.UINT32, 4), (a + ".expert_group_used_count", G.UINT32, 2),
        (a + ".nextn_predict_layers", G.UINT32, n_layer + 1), (a + ".nextn_predict_layers", G.UINT32, 1),
        (a + ".rope.scaling.type", G.STRING, "bogus"), (a + ".rope.scaling.type", G.STRING, "yarn"),
        (a + ".rope.scaling.type", G.STRING, "longrope"), (a + ".rope.scaling.type", G.STRING, "none"),
        (a + ".rope.scaling.factor", G.FLOAT32, float("nan")), (a + ".rope.scaling.factor", G.FLOAT32, -1.0),
        (a + ".rope.scaling.factor", G.FLOAT32, 0.0), (a + ".rope.scaling.original_context_length", G.UINT32, 0),
        (a + ".rope.scaling.attn_factor", G.FLOAT32, float("nan")), (a + ".rope.freq_base", G.FLOAT32, 0.0),
        (a + ".attention.key_length", G.UINT32, 0), (a + ".attention.key_length", G.UINT32, 65),
        (a + ".attention.value_length", G.UINT32, 0), (a + ".attention.value_length", G.UINT32, 4096),
        (a + ".attention.sliding_window", G.UINT32, 0), (a + ".attention.sliding_window", G.UINT32, 4),
        (a + ".attention.layer_norm_epsilon", G.FLOAT32, float("nan")),
        (a + ".attention.layer_norm_rms_epsilon", G.FLOAT32, -1.0),
        (a + ".attention.head_count", G.UINT32, 0), (a + ".attention.head_count_kv", G.UINT32, 0),
        (a + ".attention.head_count_kv", G.UINT32, 2), (a + ".attention.head_count_kv", G.UINT32, 4),
        (a + ".feed_forward_length", G.UINT32, 0), (a + ".embedding_length", G.UINT32, 0),
        (a + ".context_length", G.UINT32, 0), (a + ".context_length", G.UINT32, 0xFFFFFFFF),
        (a + ".vocab_size", G.UINT32, 0), (a + ".vocab_size", G.UINT32, 0xFFFFFFFF),
        (a + ".rope.dimension_count", G.UINT32, 0), (a + ".rope.dimension_count", G.UINT32, 63),
        (a + ".rope.dimension_count", G.UINT32, 1024), (a + ".pooling_type", G.UINT32, 100),
        (a + ".pooling_type", G.UINT32, 1), (a + ".attention.causal", G.BOOL, 0),
        (a + ".logit_scale", G.FLOAT32, float("nan")), (a + ".final_logit_softcapping", G.FLOAT32, 0.0),
        (a + ".attn_logit_softcapping", G.FLOAT32, float("nan")), (a + ".attention.clamp_kqv", G.FLOAT32, -1.0),
        (a + ".block_count", G.UINT32, 0), (a + ".block_count", G.UINT32, LLAMA_MAX_LAYERS + 1),
        ("tokenizer.ggml.token_type_count", G.UINT32, 0), ("tokenizer.ggml.add_eos_token", G.BOOL, 1),
        ("tokenizer.ggml.add_sep_token", G.BOOL, 1), ("tokenizer.ggml.eot_token_id", G.UINT32, 0xFFFFFFFF),
        ("tokenizer.ggml.sep_token_id", G.UINT32, 10 ** 9), ("tokenizer.ggml.eom_token_id", G.UINT32, 0),
        ("tokenizer.ggml.mask_token_id", G.UINT32, 0), ("tokenizer.ggml.scores", G.ARRAY, None),
        ("tokenizer.ggml.precompiled_charsmap", G.ARRAY, None), ("general.alignment", G.UINT32, 0),
        ("general.alignment", G.UINT32, 3), ("general.alignment", G.UINT32, 64), ("general.alignment", G.UINT64, 32),
        ("general.alignment", G.UINT32, 1), ("tokenizer.chat_template", G.STRING, "{% for m in messages %}"),
    ]


def _n_vocab(g: G.GGUFFile) -> int:
    return len(g.get("tokenizer.ggml.tokens", []))


# Each mutator changes the clone g (or returns header bytes / a cut) and
# returns (description, write keyword arguments).
Mutator = Callable[[G.GGUFFile, random.Random], Tuple[str, dict]]


def m_header(g, rng):
    field = rng.choice(["version", "n_tensors", "n_kv"])
    if field == "version":
        g.version = rng.choice([0, 1, 2, 4, 0x30000000, 0xFFFFFFFF, 0x00010003, rng.randrange(1 << 32)])
        return "header version = %d" % g.version, {}
    n = len(g.tensors) if field == "n_tensors" else len(g.kvs)
    v = rng.choice([0, n - 1, n + 1, n * 2, 1 << 63, (1 << 64) - 1, 1 << 32, rng.randrange(1 << 64)])
    setattr(g, field, v)
    return "header %s = %d (was %d)" % (field, v, n), {}


def m_kv_value(g, rng):
    i = rng.randrange(len(g.kvs))
    kv = g.kvs[i]
    if kv.type == G.ARRAY:
        return m_array(g, rng, kv.key)
    v = value_for(rng, kv.type, kv.value)
    g.set(kv.key, v)
    return "kv %s (%s) = %s (was %s)" % (kv.key, kv.type_name, fmt(v), fmt(kv.value)), {}


def m_hparam(g, rng):
    """A value for a key llama.cpp reads (present in the file or not)."""
    if rng.random() < 0.5:
        key, type_, v = rng.choice(arch_keys(g))
        if type_ == G.ARRAY:
            n = _n_vocab(g)
            if key.endswith("scores"):
                v = [rng.choice([0.0, float("nan"), -1e30]) for _ in range(n)]
                g.set(key, v, G.ARRAY, G.FLOAT32)
            else:
                v = [rng.randrange(256) for _ in range(rng.choice([0, 3, 4, 64]))]
                g.set(key, v, G.ARRAY, G.UINT8)
            return "kv %s = array of %d" % (key, len(v)), {}
        g.set(key, v, type_)
        return "kv %s (%s) = %s" % (key, G.TYPE_NAMES[type_], fmt(v)), {}
    keys = [kv.key for kv in g.kvs if kv.key.startswith(g.arch + ".") and kv.type != G.ARRAY]
    key = rng.choice(keys)
    kv = g.kv(key)
    v = value_for(rng, kv.type, kv.value)
    g.set(key, v)
    return "kv %s (%s) = %s (was %s)" % (key, kv.type_name, fmt(v), fmt(kv.value)), {}


def m_per_layer_array(g, rng):
    """A per-layer hparam given as an array (of the right length or not)."""
    a = g.arch
    n_layer = g.get(a + ".block_count")
    key = rng.choice([a + ".attention.head_count", a + ".attention.head_count_kv", a + ".feed_forward_length",
                      a + ".expert_used_count"])
    cur = g.get(key, 1)
    n = rng.choice([n_layer, n_layer, n_layer - 1, n_layer + 1, 0, 600])
    how = rng.choice(["same", "zero-one", "random", "double"])
    vals = {"same": lambda i: cur, "zero-one": lambda i: 0 if i == n // 2 else cur,
            "random": lambda i: rng.randrange(0, 3 * max(cur, 1)), "double": lambda i: cur * 2}[how]
    v = [vals(i) for i in range(n)]
    at = rng.choice([G.UINT32, G.UINT32, G.INT32, G.FLOAT32, G.UINT64, G.BOOL])
    if at == G.FLOAT32:
        v = [float(x) for x in v]
    g.set(key, v, G.ARRAY, at)
    return "kv %s = arr[%s] of %d (%s)" % (key, G.TYPE_NAMES[at], n, how), {}


def m_heads(g, rng):
    """Head counts and sizes changed together with the attention tensors'
    shapes, so that every shape still matches what llama.cpp expects: only
    the hyperparameters' consistency (the graph's asserts) is left to catch."""
    a = g.arch
    n_embd = g.get(a + ".embedding_length")
    n_head = g.get(a + ".attention.head_count")
    n_kv = g.get(a + ".attention.head_count_kv", n_head)
    if not all(isinstance(x, int) and x > 0 for x in (n_embd, n_head, n_kv)):
        raise Skip()
    hk = g.get(a + ".attention.key_length", n_embd // n_head)
    hv = g.get(a + ".attention.value_length", n_embd // n_head)
    what = rng.choice(["head_count_kv", "head_count", "value_length", "key_length", "key_length"])
    if what == "head_count_kv":
        n_kv = rng.choice([1, 2, 4, 5, n_head, n_head * 2])
    elif what == "head_count":
        n_head = rng.choice([1, 2, 4, 6, 8, 12, 18])
    elif what == "value_length":
        hv = rng.choice([16, 32, 48, 128, 256])
    else:
        hk = rng.choice([16, 32, 48, 128, 256])
    set_rot = rng.random() < 0.5 and what == "key_length"
    for key, v in (("head_count", n_head), ("head_count_kv", n_kv), ("key_length", hk), ("value_length", hv)):
        g.set(a + ".attention." + key, v, G.UINT32)
    if set_rot:
        g.set(a + ".rope.dimension_count", hk, G.UINT32)
    shapes = {"attn_q": [n_embd, hk * n_head], "attn_k": [n_embd, hk * n_kv], "attn_v": [n_embd, hv * n_kv],
              "attn_output": [hk * n_head, n_embd], "attn_q_norm": [hk], "attn_k_norm": [hk]}
    for t in g.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in shapes and parts[3] == "weight":
            t.dims = list(shapes[parts[2]])
    g.relayout()
    return "heads %d (kv %d) of key size %d, value size %d%s, attention tensors reshaped to match" % (
        n_head, n_kv, hk, hv, " (rope.dimension_count too)" if set_rot else ""), {}


def m_kv_type(g, rng):
    """A key's value given as another type (converted, so it still parses)."""
    kv = g.kvs[rng.randrange(len(g.kvs))]
    if kv.type == G.ARRAY:
        new_at = rng.choice([t for t in (G.UINT8, G.INT32, G.UINT32, G.FLOAT32, G.STRING, G.BOOL, G.UINT64)
                             if t != kv.array_type])
        v = [conv(x, new_at) for x in kv.value]
        g.set(kv.key, v, G.ARRAY, new_at)
        return "kv %s: %s -> arr[%s]" % (kv.key, kv.type_name, G.TYPE_NAMES[new_at]), {}
    new = rng.choice([t for t in list(SCALAR_TYPES) + [G.STRING, G.ARRAY] if t != kv.type])
    if new == G.ARRAY:
        at = kv.type
        g.set(kv.key, [kv.value] * rng.choice([0, 1, 30]), G.ARRAY, at)
        return "kv %s: %s -> arr[%s]" % (kv.key, kv.type_name, G.TYPE_NAMES[at]), {}
    v = conv(kv.value, new)
    g.set(kv.key, v, new)
    return "kv %s: %s -> %s (%s)" % (kv.key, kv.type_name, G.TYPE_NAMES[new], fmt(v)), {}


SCALAR_TYPES = (G.UINT8, G.INT8, G.UINT16, G.INT16, G.UINT32, G.INT32, G.FLOAT32, G.BOOL, G.UINT64, G.INT64,
                G.FLOAT64)


def conv(v: object, type_: int) -> object:
    if type_ == G.STRING:
        return v if isinstance(v, (str, bytes)) else str(v)
    if isinstance(v, (str, bytes)):
        v = len(v)
    if type_ in FLOAT_TYPES:
        return float(v)
    if type_ == G.BOOL:
        return 1 if v else 0
    try:
        return int(v)
    except (ValueError, OverflowError):
        return 0


def m_kv_remove(g, rng):
    kv = g.kvs[rng.randrange(len(g.kvs))]
    g.remove(kv.key)
    return "kv %s removed" % kv.key, {}


def m_kv_key(g, rng):
    i = rng.randrange(len(g.kvs))
    kv = g.kvs[i]
    how = rng.choice(["duplicate", "rename to another", "empty", "odd", "long"])
    new = {"duplicate": lambda: None, "rename to another": lambda: rng.choice(g.kvs).key, "empty": lambda: "",
           "odd": lambda: b"\xff\x00key", "long": lambda: "k" * 70000}[how]()
    if new is None:
        g.kvs.insert(i + 1, kv)
    else:
        g.kvs[i] = G.KV(new, kv.type, kv.value, kv.array_type)
    return "kv %s: key %s%s" % (kv.key, how, "" if new is None else " " + fmt(new)), {}


def m_array(g, rng, key=None):
    keys = [kv.key for kv in g.kvs if kv.type == G.ARRAY]
    key = key or rng.choice(keys)
    kv = g.edit(key)
    v = kv.value
    n = len(v)
    how = rng.choice(["empty", "shorter", "longer", "element", "element", "swap", "element type"])
    if how == "empty":
        kv.value = []
    elif how == "shorter":
        kv.value = v[:rng.choice([1, n // 2, n - 1]) if n else 0]
    elif how == "longer":
        kv.value = v + v[:rng.choice([1, 10, n])]
    elif how == "element" and n:
        j = rng.randrange(n)
        old = v[j]
        v[j] = value_for(rng, kv.array_type, old)
        return "kv %s[%d] = %s (was %s)" % (key, j, fmt(v[j]), fmt(old)), {}
    elif how == "swap" and n > 1:
        j, k = rng.randrange(n), rng.randrange(n)
        v[j], v[k] = v[k], v[j]
        return "kv %s: items %d and %d swapped" % (key, j, k), {}
    else:
        at = rng.choice([G.UINT8, G.INT8, G.INT32, G.UINT32, G.FLOAT32, G.STRING, G.UINT64, G.BOOL, G.FLOAT64])
        kv.value = [conv(x, at) for x in v]
        kv.array_type = at
        return "kv %s: element type -> %s" % (key, G.TYPE_NAMES[at]), {}
    return "kv %s: %s (%d -> %d items)" % (key, how, n, len(kv.value)), {}


def m_vocab(g, rng):
    """Tokenizer contents: tokens, their types, scores, merges, special ids."""
    n = _n_vocab(g)
    what = rng.choice(["dup", "empty", "nul", "token type", "token type", "merge", "special id", "model", "pre",
                       "long token", "bad utf8", "empty-like"])
    if what == "dup":
        kv = g.edit("tokenizer.ggml.tokens")
        j, k = rng.sample(range(n), 2)
        kv.value[j] = kv.value[k]
        return "token %d = token %d (%s): duplicate token text" % (j, k, fmt(kv.value[k])), {}
    if what == "empty":
        kv = g.edit("tokenizer.ggml.tokens")
        j = rng.randrange(n)
        kv.value[j] = ""
        return "token %d = ''" % j, {}
    if what == "empty-like":
        kv = g.edit("tokenizer.ggml.tokens")
        j, k = rng.sample(range(n), 2)
        kv.value[j] = ""
        kv.value[k] = "[EMPTY_%d]" % j
        return "token %d = '' and token %d = '[EMPTY_%d]' (what llama.cpp names an empty token)" % (j, k, j), {}
    if what == "nul":
        kv = g.edit("tokenizer.ggml.tokens")
        j = rng.randrange(n)
        kv.value[j] = rng.choice([b"\x00", kv.value[j].encode() + b"\x00zz", b"\x00" + kv.value[j].encode()])
        return "token %d = %s (a NUL byte)" % (j, fmt(kv.value[j])), {}
    if what == "long token":
        kv = g.edit("tokenizer.ggml.tokens")
        j = rng.randrange(n)
        kv.value[j] = "y" * rng.choice([300, 70000])
        return "token %d is %d bytes long" % (j, len(kv.value[j])), {}
    if what == "bad utf8":
        kv = g.edit("tokenizer.ggml.tokens")
        j = rng.randrange(n)
        kv.value[j] = rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"a\x80b"])
        return "token %d = %s (invalid UTF-8)" % (j, fmt(kv.value[j])), {}
    if what == "token type":
        if "tokenizer.ggml.token_type" not in [k.key for k in g.kvs]:
            raise Skip()
        kv = g.edit("tokenizer.ggml.token_type")
        j = rng.choice([rng.randrange(n), 0, 1, 2, n - 1, 10])
        kv.value[j] = rng.choice([-1, 0, 2, 3, 4, 5, 6, 7, 1000, -2 ** 31])
        return "token_type[%d] = %d" % (j, kv.value[j]), {}
    if what == "merge":
        if "tokenizer.ggml.merges" not in [k.key for k in g.kvs]:
            raise Skip()
        kv = g.edit("tokenizer.ggml.merges")
        j = rng.randrange(len(kv.value))
        kv.value[j] = rng.choice(["", " ", "a", "a b c", " a", "zzz qqq", "\x00 a", "Ġ t"])
        return "merge %d = %r" % (j, kv.value[j]), {}
    if what == "special id":
        key = rng.choice(["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                          "tokenizer.ggml.padding_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.cls_token_id"])
        v = rng.choice([n, n - 1, 0xFFFFFFFF, 0x7FFFFFFF, 0, 10 ** 6])
        type_ = rng.choice([G.UINT32, G.UINT32, G.INT32, G.UINT64])
        g.set(key, v, type_)
        return "kv %s (%s) = %d (vocabulary of %d)" % (key, G.TYPE_NAMES[type_], v, n), {}
    if what == "model":
        v = rng.choice(TOKENIZERS)
        g.set("tokenizer.ggml.model", v, G.STRING)
        return "kv tokenizer.ggml.model = %r" % v, {}
    v = rng.choice(PRE_TOKENIZERS)
    g.set("tokenizer.ggml.pre", v, G.STRING)
    return "kv tokenizer.ggml.pre = %r" % v, {}


def m_arch(g, rng):
    new = rng.choice(ARCHES)
    old = g.arch
    g.set("general.architecture", new)
    if rng.random() < 0.7:  # the hparams renamed too: the new arch finds its keys
        for i, kv in enumerate(g.kvs):
            if kv.key.startswith(old + "."):
                g.kvs[i] = G.KV(new + kv.key[len(old):], kv.type, kv.value, kv.array_type)
        return "general.architecture = %r (keys renamed)" % new, {}
    return "general.architecture = %r" % new, {}


def tensor_types_for(t: G.TensorInfo) -> List[int]:
    """Types whose block size divides the row length."""
    return [ty for ty, (_, blk, _) in G.GGML_TYPES.items() if t.dims and t.dims[0] % blk == 0]


def convert_data(data: bytes, old: int, new: int, n_elements: int) -> Optional[bytes]:
    """F32 <-> F16 conversion of data, else None."""
    if old == G.F32 and new == G.F16:
        vals = struct.unpack("<%df" % n_elements, data[:4 * n_elements])
        return struct.pack("<%de" % n_elements, *vals)
    if old == G.F32 and new == G.BF16:
        return b"".join(data[i + 2:i + 4] for i in range(0, 4 * n_elements, 4))
    return None


def m_tensor_type(g, rng, consistent=None):
    """A tensor's type changed; consistent: the data laid out again (and
    converted where it can be), so that the file still parses."""
    t = rng.choice(g.tensors)
    old = t.type
    consistent = rng.random() < 0.8 if consistent is None else consistent
    if consistent:
        choices = tensor_types_for(t)
        # norms and other 1-D tensors to the types a converter might write
        if len(t.dims) == 1 and rng.random() < 0.5:
            choices = [G.F16, G.BF16, G.Q8_0, G.F64, G.I32]
            choices = [c for c in choices if t.dims[0] % G.GGML_TYPES[c][1] == 0]
        new = rng.choice([c for c in choices if c != old] or [old])
        t.type = new
        conv_data = None
        if old == G.F32:
            n = 1
            for d in t.dims:
                n *= d
            conv_data = convert_data(g.read_tensor(t.name), old, new, n)
        if conv_data is not None:
            g.data[t.name] = conv_data
        g.relayout()  # other data: the original bytes, cut or zero-filled to the new size
        return "tensor %s: type %s -> %s (data %s)" % (
            t.name, G.GGML_TYPES[old][0], G.GGML_TYPES[new][0],
            "converted" if conv_data is not None else "reinterpreted"), {}
    new = rng.choice([new for new in range(0, G.GGML_TYPE_COUNT + 3) if new != old] + [-1, 1 << 31])
    t.type = new
    return "tensor %s: type field %d -> %d (offsets kept)" % (t.name, old, new), {}


def m_tensor_shape(g, rng):
    t = rng.choice(g.tensors)
    old = list(t.dims)
    how = rng.choice(["swap", "zero", "one", "double", "half", "add dim", "drop dim", "huge", "negative", "5 dims"])
    d = list(t.dims)
    j = rng.randrange(len(d))
    if how == "swap" and len(d) > 1:
        d[0], d[1] = d[1], d[0]
    elif how == "zero":
        d[j] = 0
    elif how == "one":
        d[j] = 1
    elif how == "double":
        d[j] *= 2
    elif how == "half":
        d[j] = max(1, d[j] // 2)
    elif how == "add dim":
        d.append(rng.choice([1, 2]))
    elif how == "drop dim" and len(d) > 1:
        d.pop()
    elif how == "huge":
        d[j] = rng.choice([1 << 40, 1 << 62, (1 << 63) - 1])
    elif how == "negative":
        d[j] = (1 << 64) - 1
    elif how == "5 dims":
        d = d + [1] * (5 - len(d))
    t.dims = d
    relayout = how not in ("huge", "negative", "5 dims") and rng.random() < 0.8
    if relayout:
        try:
            t.nbytes()
            g.relayout()
        except (KeyError, ZeroDivisionError):
            relayout = False
    return "tensor %s: shape %s -> %s (%s, %s)" % (t.name, old, d, how,
                                                  "data laid out again" if relayout else "offsets kept"), {}


def m_tensor_info(g, rng):
    i = rng.randrange(len(g.tensors))
    t = g.tensors[i]
    how = rng.choice(["offset", "offset", "remove", "duplicate", "rename", "rename unknown", "name empty",
                      "name long", "swap order", "swap names"])
    if how == "offset":
        old = t.offset
        t.offset = rng.choice([old + 1, old + 32, max(0, old - 32), 0, 1 << 40, (1 << 64) - 1, old + (1 << 32)])
        return "tensor %s: offset %d -> %d" % (t.name, old, t.offset), {}
    if how == "remove":
        del g.tensors[i]
        if rng.random() < 0.5:
            g.relayout()
            return "tensor %s removed (data laid out again)" % t.name, {}
        return "tensor %s removed (offsets kept)" % t.name, {}
    if how == "duplicate":
        g.tensors.insert(i + 1, t.copy())
        return "tensor %s listed twice" % t.name, {}
    if how == "rename":
        other = rng.choice(g.tensors)
        old = t.name
        t.name = other.name
        return "tensor %s renamed to %s" % (old, other.name), {}
    if how == "rename unknown":
        old = t.name
        t.name = rng.choice(["blk.0.bogus.weight", "blk.999.attn_q.weight", "blk.x.attn_q.weight", "output.weight",
                             "rope_freqs.weight", "blk.0.attn_q.bias", "token_embd_norm.weight"])
        return "tensor %s renamed to %s" % (old, t.name), {}
    if how == "name empty":
        old, t.name = t.name, ""
        return "tensor %s renamed to ''" % old, {}
    if how == "name long":
        old, t.name = t.name, "n" * rng.choice([63, 64, 1000])
        return "tensor %s renamed to a %d-byte name" % (old, len(t.name)), {}
    if how == "swap order":
        j = rng.randrange(len(g.tensors))
        g.tensors[i], g.tensors[j] = g.tensors[j], g.tensors[i]
        return "tensors %s and %s swapped in the list (offsets kept)" % (g.tensors[j].name, g.tensors[i].name), {}
    j = rng.randrange(len(g.tensors))
    a, b = g.tensors[i], g.tensors[j]
    a.name, b.name = b.name, a.name
    return "tensor names %s and %s swapped" % (a.name, b.name), {}


def m_tensor_data(g, rng):
    """Values the engine computes with: NaN, Inf, huge (no check expected)."""
    t = rng.choice([t for t in g.tensors if t.type == G.F32])
    n = 1
    for d in t.dims:
        n *= d
    v = rng.choice([float("nan"), float("inf"), -3e38, 0.0])
    g.data[t.name] = struct.pack("<f", v) * n
    return "tensor %s: every value = %r" % (t.name, v), {}


def m_bytes(g, rng):
    """Raw bytes of one header field (or of any header byte) changed."""
    fields: list = []
    header = bytearray(g.header_bytes(fields))
    if rng.random() < 0.8:
        off, size, label = rng.choice(fields)
    else:
        off, size, label = rng.randrange(len(header)), 1, "a header byte"
    how = rng.choice(["flip", "ones", "zero", "random", "plus one", "minus one"])
    cur = int.from_bytes(header[off:off + size], "little")
    top = (1 << (8 * size)) - 1
    new = {"flip": lambda: cur ^ (1 << rng.randrange(8 * size)), "ones": lambda: top, "zero": lambda: 0,
           "random": lambda: rng.randrange(top + 1), "plus one": lambda: (cur + 1) & top,
           "minus one": lambda: (cur - 1) & top}[how]()
    header[off:off + size] = new.to_bytes(size, "little")
    return "bytes %d..%d (%s): %s, 0x%x -> 0x%x" % (off, off + size, label, how, cur, new), {"header": bytes(header)}


def m_truncate(g, rng):
    hl = g.header_len
    total = g.file_size
    where = rng.choice(["header", "header", "field", "data start", "data", "last byte"])
    if where == "header":
        at = rng.randrange(0, hl)
    elif where == "field":
        fields: list = []
        g.header_bytes(fields)
        at = rng.choice(fields)[0] + rng.choice([0, 1])
    elif where == "data start":
        at = g.data_offset + rng.choice([0, 1, 31])
    elif where == "data":
        at = rng.randrange(g.data_offset, total)
    else:
        at = total - 1
    return "file cut at byte %d of %d (%s)" % (at, total, where), {"truncate_at": at}


MUTATORS: List[Tuple[Mutator, int]] = [
    (m_header, 4), (m_kv_value, 10), (m_hparam, 16), (m_per_layer_array, 5), (m_heads, 6), (m_kv_type, 8),
    (m_kv_remove, 6),
    (m_kv_key, 3), (m_array, 5), (m_vocab, 14), (m_arch, 5), (m_tensor_type, 14), (m_tensor_shape, 8),
    (m_tensor_info, 8), (m_tensor_data, 2), (m_bytes, 12), (m_truncate, 6),
]


def build_corpus(base: G.GGUFFile, seed: int, n: int) -> List[Mutation]:
    """n mutations of base, each drawn from its own (seed, index) generator
    (GGUF_FUZZ_ONLY=heads,vocab draws from those mutators alone)."""
    out = []
    only = [x for x in os.environ.get("GGUF_FUZZ_ONLY", "").split(",") if x]
    chosen = [(f, w) for f, w in MUTATORS if not only or f.__name__[2:] in only]
    funcs = [f for f, _ in chosen]
    weights = [w for _, w in chosen]
    for i in range(n):
        rng = random.Random("%d:%d" % (seed, i))
        for _ in range(20):
            g = base.clone()
            f = rng.choices(funcs, weights)[0]
            try:
                desc, kw = f(g, rng)
                break
            except Skip:
                continue
        out.append(Mutation("%s: %s" % (f.__name__[2:], desc), _writer(g, kw)))
    return out


def _writer(g: G.GGUFFile, kw: dict) -> Callable[[Path], None]:
    return lambda dest: g.write(dest, **kw)


# --------------------------------------------------------------------------
# the five known defects, made by hand


def defect_files(base: G.GGUFFile) -> Dict[str, Tuple[Mutation, type, List[str]]]:
    """name -> (mutation, expected exception, words its message must have)."""
    from gpt4all.errors import InvalidModelError, UnsupportedModelError

    a = base.arch
    out = {}

    def add(name, fn, exc, words):
        g = base.clone()
        desc = fn(g)
        out[name] = (Mutation(desc, _writer(g, {})), exc, words)

    def n_layer(v):
        def f(g):
            g.set(a + ".block_count", v)
            return "%s.block_count = %d" % (a, v)
        return f

    add("block_count_0", n_layer(0), InvalidModelError, [a + ".block_count", "0"])
    add("block_count_too_big", n_layer(LLAMA_MAX_LAYERS + 1), InvalidModelError,
        [a + ".block_count", str(LLAMA_MAX_LAYERS + 1), str(LLAMA_MAX_LAYERS)])

    def eps(v):
        def f(g):
            g.set(a + ".attention.layer_norm_rms_epsilon", v)
            return "%s.attention.layer_norm_rms_epsilon = %r" % (a, v)
        return f

    add("eps_nan", eps(float("nan")), InvalidModelError, ["layer_norm_rms_epsilon", "nan"])
    add("eps_negative", eps(-1e-5), InvalidModelError, ["layer_norm_rms_epsilon", "-1e-05"])

    def no_vocab(g):
        g.set("tokenizer.ggml.model", "none")
        return "tokenizer.ggml.model = 'none'"

    add("tokenizer_none", no_vocab, UnsupportedModelError, ["tokenizer.ggml.model", "none"])

    def f16_norm(g):
        t = g.tensor("blk.0.attn_norm.weight")
        g.data[t.name] = convert_data(g.read_tensor(t.name), G.F32, G.F16, t.dims[0])
        t.type = G.F16
        g.relayout()
        return "blk.0.attn_norm.weight stored as F16"

    add("norm_weight_f16", f16_norm, InvalidModelError, ["blk.0.attn_norm.weight", "F16", "F32"])

    def dup_tokens(g):
        kv = g.edit("tokenizer.ggml.tokens")
        kv.value[300] = kv.value[301]
        return "token 300 = token 301 (%r)" % kv.value[301]

    add("duplicate_tokens", dup_tokens, InvalidModelError, ["tokenizer.ggml.tokens", "300", "301"])
    return out


# --------------------------------------------------------------------------
# the child: makes each file, says so, tries it, reports


def child_main(argv: List[str]) -> None:
    base_path, which, start = argv[0], argv[1], int(argv[2])
    tmp = Path(argv[3])
    out = os.fdopen(int(argv[4]), "w")  # the reports (stdout and stderr are the engine's)
    base = G.read(base_path)
    if which == "defects":
        items = [(k, m) for k, (m, _, _) in defect_files(base).items()]
    elif which == "selftest":  # the harness itself: a file that loads, a crash, a hang, a file that loads
        same = Mutation("unchanged", _writer(base.clone(), {}))
        items = list(enumerate([same, same, same, same]))
    else:
        seed, n = (int(x) for x in which.split(":"))
        items = list(enumerate(build_corpus(base, seed, n)))
    from gpt4all._pyllmodel import LLModel
    from gpt4all.errors import GPT4AllError

    for idx, (key, mut) in enumerate(items):
        if idx < start:
            continue
        path = tmp / ("fuzz-%d.gguf" % idx)
        mut.write(path)
        sys.stderr.write("\n=== file %d\n" % idx)
        sys.stderr.flush()
        out.write(json.dumps({"try": idx}) + "\n")
        out.flush()
        t0 = time.monotonic()
        res: dict = {"done": idx}
        if which == "selftest" and idx == 1:
            os.abort()
        if which == "selftest" and idx == 2:
            time.sleep(600)
        try:
            with LLModel(path, n_ctx=64, n_threads=1) as m:
                toks: list = []
                m.generate(PROMPT, n_predict=N_PREDICT, temp=0.0, on_token=lambda t, s: toks.append(t) or True)
                res.update(kind="ok", detail="generated %s" % toks)
        except GPT4AllError as e:
            res.update(kind="error", exc=type(e).__name__, detail=str(e))
        except Exception as e:  # noqa: BLE001 (any other exception is reported as a failure)
            res.update(kind="exception", exc=type(e).__name__, detail=str(e))
        res["s"] = round(time.monotonic() - t0, 3)
        out.write(json.dumps(res) + "\n")
        out.flush()
        path.unlink()


# what a dying child writes: an assert's file:line, a sanitizer's report,
# an uncaught exception, the Python stack (faulthandler)
CRASH_LINE = re.compile(r"\.(?:c|cc|cpp|h):\d+: |GGML_A|Sanitizer|runtime error|terminate|what\(\)|Fatal Python|"
                        r"File \"|error", re.I)


@dataclass
class Outcome:
    index: int
    name: str
    kind: str  # ok, error, exception, crash, hang, exit
    exc: str = ""
    detail: str = ""
    seconds: float = 0.0


def run_corpus(base_path: Path, which: str, names: List[str], tmp: Path,
               file_timeout: float = FILE_TIMEOUT) -> List[Outcome]:
    """Runs every file of a corpus through children; one Outcome per file."""
    outcomes: Dict[int, Outcome] = {}
    # GGML_NO_BACKTRACE: an abort does not wait for gdb to print a stack
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", GGML_NO_BACKTRACE="1")
    start = 0
    n = len(names)
    while start < n:
        log = tmp / "child-output.txt"
        r, w = os.pipe()
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, str(Path(__file__)), "child", str(base_path), which, str(start),
                                     str(tmp), str(w)], stdout=err, stderr=subprocess.STDOUT, env=env, pass_fds=(w,))
        os.close(w)
        reports = os.fdopen(r, "rb", buffering=0)
        current: Optional[int] = None
        deadline = time.monotonic() + 120  # to read the base file and import
        buf = b""
        hung = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hung = True
                break
            ready, _, _ = select.select([reports], [], [], min(left, 1.0))
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "try" in msg:
                    current = msg["try"]
                    deadline = time.monotonic() + file_timeout
                else:
                    i = msg["done"]
                    outcomes[i] = Outcome(i, names[i], msg["kind"], msg.get("exc", ""), msg.get("detail", ""),
                                          msg.get("s", 0.0))
                    current = None
                    start = i + 1
        if hung:
            proc.kill()
        rc = proc.wait()
        reports.close()
        text = log.read_bytes().decode("utf-8", "replace")
        stderr_tail = text[-3000:]
        if current is not None or hung or (rc != 0 and start < n):
            i = current if current is not None else start
            if hung:
                kind, detail = "hang", "no result after %.0f s" % file_timeout
            elif rc < 0:
                kind, detail = "crash", "killed by %s" % signal.Signals(-rc).name
            else:
                kind, detail = "exit", "child exited with status %d" % rc
            own = text.split("\n=== file %d\n" % i)[-1]  # what the child wrote while on this file
            found = [ln for ln in own.splitlines() if CRASH_LINE.search(ln)]
            outcomes[i] = Outcome(i, names[i], kind, "", "%s; the child wrote: %s" % (detail, "\n".join(found)[-2500:]))
            start = i + 1
            for p in tmp.glob("fuzz-*.gguf"):
                p.unlink()
        elif rc != 0:
            raise AssertionError("child failed (status %d): %s" % (rc, stderr_tail))
    return [outcomes[i] for i in range(n)]


def bad(o: Outcome) -> bool:
    if o.kind in ("crash", "hang", "exit", "exception"):
        return True
    # an exception from llama.cpp that llmodel caught but did not foresee
    return o.kind == "error" and o.exc == "NativeError" and "internal error" in o.detail


def report(outcomes: List[Outcome], seed: Optional[int]) -> str:
    lines = []
    for o in outcomes:
        if bad(o):
            lines.append("seed %s, mutation %d (%s): %s %s %s" % (seed, o.index, o.name, o.kind, o.exc,
                                                                  o.detail[:1500]))
    if lines and seed is not None:
        lines.append("(write one of these files with: python tests/test_gguf_fuzz.py show SEED INDEX OUT.gguf MODEL)")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the tests

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2_path):
    return G.read(smollm2_path)


def test_defects_are_refused_with_a_clear_error(smollm2_path, smollm2_gguf, tmp_path):
    """The five malformed files that used to abort the process."""
    defects = defect_files(smollm2_gguf)
    names = list(defects)
    outcomes = run_corpus(smollm2_path, "defects", names, tmp_path)
    problems = []
    for o in outcomes:
        _, exc, words = defects[o.name]
        if o.kind != "error" or o.exc != exc.__name__:
            problems.append("%s: expected %s, got %s %s: %s" % (o.name, exc.__name__, o.kind, o.exc, o.detail[:800]))
            continue
        missing = [w for w in words if w not in o.detail]
        if missing:
            problems.append("%s: message lacks %s: %s" % (o.name, missing, o.detail))
    assert not problems, "\n".join(problems)


def test_the_harness_pins_crashes_and_hangs_on_their_file(smollm2_path, tmp_path):
    """A child that dies on one file and hangs on another: both are reported
    against that file, and the files after them are still tried."""
    outcomes = run_corpus(smollm2_path, "selftest", ["a", "b", "c", "d"], tmp_path, file_timeout=8)
    assert [o.kind for o in outcomes] == ["ok", "crash", "hang", "ok"], outcomes
    assert "SIGABRT" in outcomes[1].detail
    assert [bad(o) for o in outcomes] == [False, True, True, False]


def test_the_base_model_itself_loads_and_generates(smollm2_path, smollm2_gguf, tmp_path):
    """The corpus starts from a file that works once written again."""
    g = smollm2_gguf.clone()
    out = tmp_path / "same.gguf"
    g.write(out)
    assert out.read_bytes() == Path(smollm2_path).read_bytes()
    from gpt4all._pyllmodel import LLModel

    with LLModel(out, n_ctx=64, n_threads=1) as m:
        toks: list = []
        m.generate(PROMPT, n_predict=N_PREDICT, temp=0.0, on_token=lambda t, s: toks.append(t) or True)
    assert len(toks) == N_PREDICT


@pytest.mark.parametrize("alignment", [1, 8, 16])
def test_unaligned_tensor_data_is_read_rather_than_mapped(smollm2_gguf, tmp_path, alignment):
    """A GGUF file may align its data to less than the 32 bytes ggml's CPU
    buffers need; llama.cpp then asserts when it maps the file. llmodel reads
    such a file instead, and it runs like the original."""
    from conftest import run_python

    g = smollm2_gguf.clone()
    g.set("general.alignment", alignment, G.UINT32)
    g.relayout()
    path = tmp_path / ("aligned-%d.gguf" % alignment)
    g.write(path)
    assert G.read(path).data_offset % 32 != 0 or any(t.offset % 32 for t in G.read(path).tensors)
    code = (
        "from gpt4all._pyllmodel import LLModel\n"
        "with LLModel(%r, n_ctx=64, n_threads=1) as m:\n"
        "    toks = []\n"
        "    m.generate(%r, n_predict=%d, temp=0.0, on_token=lambda t, s: toks.append(t) or True)\n"
        "print(toks)\n" % (str(path), PROMPT, N_PREDICT))
    r = run_python(code, {"GGML_NO_BACKTRACE": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    with_original = run_python(code.replace(str(path), str(smollm2_gguf.path)), timeout=120)
    assert r.stdout.split() == with_original.stdout.split() and r.stdout.strip()


def _fuzz(path: Path, seed: int, n: int, tmp: Path, min_ok: float, min_err: float) -> None:
    base = G.read(path)
    names = [m.name for m in build_corpus(base, seed, n)]
    t0 = time.monotonic()
    outcomes = run_corpus(path, "%d:%d" % (seed, n), names, tmp)
    took = time.monotonic() - t0
    failures = report(outcomes, seed)
    n_ok = sum(o.kind == "ok" for o in outcomes)
    n_err = sum(o.kind == "error" for o in outcomes)
    print("%s: %d mutations (seed %d) in %.1f s: %d loaded and generated, %d refused, %d failures"
          % (path.name, n, seed, took, n_ok, n_err, sum(bad(o) for o in outcomes)))
    assert not failures, "%d of %d mutated files failed:\n%s" % (sum(bad(o) for o in outcomes), n, failures)
    # the corpus must exercise both paths: files the engine runs and files refused
    assert n_ok >= min_ok * n, "only %d of %d mutated files loaded" % (n_ok, n)
    assert n_err >= min_err * n, "only %d of %d mutated files were refused" % (n_err, n)


def test_fuzzed_smollm2_files_never_crash(smollm2_path, tmp_path):
    _fuzz(Path(smollm2_path), SEED, N_MUTATIONS, tmp_path, 0.15, 0.3)


def test_fuzzed_gemma3_files_never_crash(gemma_path, tmp_path):
    """Another architecture (sliding-window attention, per-head norms)."""
    _fuzz(Path(gemma_path), SEED + 1, N_GEMMA_MUTATIONS, tmp_path, 0.1, 0.2)


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child_main(sys.argv[2:])
    elif sys.argv[1] == "show":  # show SEED INDEX OUT [MODEL]: writes one mutation's file, prints what it is
        sys.path.insert(0, str(HERE.parent / "scripts"))
        from fetch_models import ensure_model

        base_path = sys.argv[5] if len(sys.argv) > 5 else str(ensure_model("smollm2"))
        index = int(sys.argv[3])
        m = build_corpus(G.read(base_path), int(sys.argv[2]), index + 1)[index]
        m.write(Path(sys.argv[4]))
        print(m.name)
