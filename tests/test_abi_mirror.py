"""The Python mirror of backend/include/llmodel.h matches the header: every
struct's size, field offsets and field types (measured by a C compiler), every
enum value and constant, every function's result and argument types, every
callback type, and every status maps to an exception.

Most of these tests read only the header (and compile a small C program);
the few that ask the built library say so in their names."""
from __future__ import annotations

import ctypes
import dataclasses
import re
import shutil
import subprocess
from ctypes import (POINTER, c_bool, c_char_p, c_double, c_float, c_int, c_int32, c_size_t, c_uint32, c_uint64,
                    c_void_p)

import pytest

from conftest import ROOT
from gpt4all import _native as native
from gpt4all import errors
from gpt4all._params import GenerationParams
from gpt4all._pyllmodel import STOP_REASONS

HEADER = ROOT / "backend" / "include" / "llmodel.h"
STRUCTS = {
    "llmodel_load_params": native.LoadParams,
    "llmodel_logit_bias": native.LogitBias,
    "llmodel_generate_params": native.GenerateParams,
    "llmodel_generate_result": native.GenerateResult,
    "llmodel_model_info": native.ModelInfo,
    "llmodel_device_info": native.DeviceInfo,
    "llmodel_embedder_params": native.EmbedderParams,
    "llmodel_embedder_info": native.EmbedderInfo,
}
OPAQUE = {
    "llmodel_model": native.ModelPtr,
    "llmodel_conversation": native.ConversationPtr,
    "llmodel_stream": native.StreamPtr,
    "llmodel_embedder": native.EmbedderPtr,
}
CALLBACKS = {
    "llmodel_log_callback": native.LogCallback,
    "llmodel_prompt_callback": native.PromptCallback,
    "llmodel_response_callback": native.ResponseCallback,
}
SCALARS = {
    "bool": c_bool, "int32_t": c_int32, "uint32_t": c_uint32, "uint64_t": c_uint64, "size_t": c_size_t,
    "float": c_float, "double": c_double, "llmodel_token": c_int32,
    # enums are ints
    "llmodel_status": c_int, "llmodel_stop_reason": c_int, "llmodel_log_level": c_int,
}
# Where the mirror deliberately takes another type of the same size: text
# that is not NUL-terminated is read by length from a void pointer, which
# ctypes does not turn into bytes up to a NUL.
DELIBERATE = {
    ("llmodel_stream_next", "text"): POINTER(c_void_p),  # const char **: a pointer into the stream's buffer
    ("llmodel_response_callback", "piece"): c_void_p,  # const char *: piece_len bytes
}


def _source() -> str:
    """The header without its comments."""
    return re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)


def _split_decl(decl: str) -> tuple:
    """('const char *name') -> (type tokens, name)."""
    tokens = re.findall(r"\w+|\*", decl)
    return tuple(tokens[:-1]), tokens[-1]


def ctype(tokens: tuple):
    """The ctypes type for a C type given as tokens, e.g. ('const', 'char', '*')."""
    tokens = tuple(t for t in tokens if t not in ("const", "struct"))
    base, stars = tokens[0], tokens.count("*")
    assert tokens == (base,) + ("*",) * stars, tokens
    if base == "void":
        t = None if stars == 0 else c_void_p
        stars = max(stars - 1, 0)
    elif base == "char":
        assert stars >= 1, tokens
        t, stars = c_char_p, stars - 1
    elif base in OPAQUE:
        assert stars >= 1, tokens
        t, stars = OPAQUE[base], stars - 1
    elif base in STRUCTS:
        t = STRUCTS[base]
    elif base in CALLBACKS:
        t = CALLBACKS[base]
    else:
        t = SCALARS[base]
    for _ in range(stars):
        t = POINTER(t)
    return t


def header_enum(name: str) -> dict:
    """{constant: value} of one `typedef enum name {...}` in the header."""
    body = re.search(r"typedef enum %s \{(.*?)\}" % name, _source(), re.S)
    assert body, name
    values = {k: int(v) for k, v in re.findall(r"(LLMODEL_\w+)\s*=\s*(-?\d+)", body.group(1))}
    # every enumerator has its value written out
    assert len(values) == len([e for e in body.group(1).split(",") if e.strip()]), name
    return values


def header_struct(name: str) -> list:
    """[(type tokens, field)] of one `typedef struct name {...} name;` in the header."""
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (name, name), _source(), re.S)
    assert body, name
    return [_split_decl(d) for d in body.group(1).split(";") if d.strip()]


def header_functions() -> dict:
    """{name: (result type tokens, [(argument type tokens, argument name)])} of every LLMODEL_API function."""
    out = {}
    for result, name, args in re.findall(r"LLMODEL_API\s+([^;(]*?)\s*\b(llmodel_\w+)\s*\(([^)]*)\)\s*;", _source()):
        assert name not in out, f"{name} is declared twice in the header"
        params = [] if args.strip() == "void" else [_split_decl(a) for a in args.split(",")]
        out[name] = (tuple(re.findall(r"\w+|\*", result)), params)
    return out


# ------------------------------------------------------------ structs

@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict:
    """{struct: (size, {field: offset})}, as the C compiler lays them out."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "a C compiler is needed to measure the header's structs"
    lines = []
    for struct, mirror in STRUCTS.items():
        lines.append(f'printf("{struct} size %zu\\n", sizeof({struct}));')
        for field, _ in mirror._fields_:
            lines.append(f'printf("{struct} {field} %zu\\n", offsetof({struct}, {field}));')
    src = tmp_path_factory.mktemp("abi") / "layout.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include \"llmodel.h\"\nint main(void) {\n"
                   + "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = src.with_suffix("")
    subprocess.run([cc, "-std=c99", f"-I{HEADER.parent}", str(src), "-o", str(exe)], check=True)
    out: dict = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        struct, field, value = line.split()
        size, fields = out.setdefault(struct, [0, {}])
        if field == "size":
            out[struct][0] = int(value)
        else:
            fields[field] = int(value)
    return out


def test_every_struct_of_the_header_is_mirrored():
    in_header = set(re.findall(r"typedef struct (\w+) \{", _source()))
    assert in_header == set(STRUCTS)
    opaque = set(re.findall(r"typedef struct (\w+) \1;", _source()))
    assert opaque == set(OPAQUE)


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_struct_layout_matches_the_header(c_layout, struct):
    mirror = STRUCTS[struct]
    size, offsets = c_layout[struct]
    assert ctypes.sizeof(mirror) == size
    assert {name: getattr(mirror, name).offset for name, _ in mirror._fields_} == offsets
    # the same fields in the same order, of the same types (a float where an
    # int32 belongs would have the right offsets and the wrong values)
    declared = header_struct(struct)
    assert [name for _, name in declared] == [name for name, _ in mirror._fields_]
    for (tokens, name), (_, mirrored) in zip(declared, mirror._fields_):
        assert mirrored is ctype(tokens), f"{struct}.{name}"


# ------------------------------------------------------------ enums and constants

ENUM_MIRRORS = {
    # enum: {its constant's name: the Python value it must equal}
    "llmodel_status": lambda name: getattr(native, name[len("LLMODEL_"):], None),
    "llmodel_stop_reason": lambda name: {v: k for k, v in STOP_REASONS.items()}.get(
        name[len("LLMODEL_STOP_"):].lower()),
    "llmodel_log_level": lambda name: getattr(native, name[len("LLMODEL_"):], None),
    "llmodel_pooling": lambda name: getattr(native, name[len("LLMODEL_"):], None),
}


def test_every_enum_of_the_header_is_mirrored():
    assert set(re.findall(r"typedef enum (\w+) \{", _source())) == set(ENUM_MIRRORS)


@pytest.mark.parametrize("enum", sorted(ENUM_MIRRORS))
def test_enum_values_match_the_header(enum):
    values = header_enum(enum)
    assert values
    for name, value in values.items():
        assert ENUM_MIRRORS[enum](name) == value, name
    if enum == "llmodel_stop_reason":  # and the mirror has no reason the header lacks
        assert len(STOP_REASONS) == len(values)


def test_every_status_has_its_constant_and_exception():
    statuses = header_enum("llmodel_status")
    assert len(statuses) >= 14
    for name, value in statuses.items():
        assert getattr(native, name.replace("LLMODEL_", ""), None) == value, name
        if value != native.OK:
            assert issubclass(native._EXCEPTIONS.get(value, type(None)), errors.GPT4AllError), \
                f"{name} has no exception"
    assert set(native._EXCEPTIONS) == set(statuses.values()) - {native.OK}
    assert native._EXCEPTIONS[native.ERR_CANCELLED] is errors.CancellationError
    assert native._EXCEPTIONS[native.ERR_BACKEND] is errors.BackendError
    assert native._EXCEPTIONS[native.ERR_INTERNAL] is errors.InternalError
    assert native._EXCEPTIONS[native.ERR_BUFFER_TOO_SMALL] is errors.NativeError
    import gpt4all

    for cls in set(native._EXCEPTIONS.values()):  # each one importable from the package
        assert getattr(gpt4all, cls.__name__) is cls and cls.__name__ in gpt4all.__all__


def test_the_library_names_every_status_as_the_header_does():
    for name, value in header_enum("llmodel_status").items():
        assert native.lib().llmodel_status_name(value).decode() == name


def _define(name: str) -> str:
    return re.search(r"#define %s (.+)" % name, _source()).group(1).strip()


def test_constants_match_the_header():
    assert int(_define("LLMODEL_ABI_VERSION")) == native.ABI_VERSION
    assert int(_define("LLMODEL_MAX_THREADS")) == native.MAX_THREADS
    assert int(_define("LLMODEL_MAX_PARALLEL")) == native.MAX_PARALLEL
    assert _define("LLMODEL_SEED_RANDOM") == "UINT32_MAX" and native.SEED_RANDOM == 2**32 - 1
    assert _define("LLMODEL_TOKEN_NONE") == "((llmodel_token)-1)" and native.TOKEN_NONE == -1
    # and no constant of the header is left out of this test
    defines = set(re.findall(r"#define (LLMODEL_\w+) ", _source()))
    assert defines - {"LLMODEL_H", "LLMODEL_API"} == {
        "LLMODEL_ABI_VERSION", "LLMODEL_MAX_THREADS", "LLMODEL_MAX_PARALLEL", "LLMODEL_SEED_RANDOM",
        "LLMODEL_TOKEN_NONE"}


def test_the_library_has_the_headers_abi_version():
    assert native.lib().llmodel_abi_version() == native.ABI_VERSION == int(_define("LLMODEL_ABI_VERSION"))


# ------------------------------------------------------------ functions and callbacks

def test_every_header_function_is_declared_once():
    in_header = header_functions()
    declared = [name for name, _, _ in native._FUNCTIONS]
    assert len(declared) == len(set(declared))
    assert set(in_header) == set(declared)


@pytest.mark.parametrize("name, restype, argtypes", native._FUNCTIONS, ids=[f[0] for f in native._FUNCTIONS])
def test_function_types_match_the_header(name, restype, argtypes):
    result, params = header_functions()[name]
    assert len(argtypes) == len(params), f"{name} takes {len(params)} arguments"
    assert restype is ctype(result), f"{name} returns {' '.join(result)}"
    for i, ((tokens, arg), mirrored) in enumerate(zip(params, argtypes)):
        expected = DELIBERATE.get((name, arg), ctype(tokens))
        assert mirrored is expected, f"{name} argument {i} ({' '.join(tokens)} {arg})"


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_callback_types_match_the_header(name):
    m = re.search(r"typedef\s+([^;(]*?)\s*\(\s*\*\s*%s\s*\)\s*\(([^)]*)\)\s*;" % name, _source())
    assert m, name
    mirror = CALLBACKS[name]
    params = [_split_decl(a) for a in m.group(2).split(",")]
    assert mirror._restype_ is ctype(tuple(re.findall(r"\w+|\*", m.group(1))))
    assert len(mirror._argtypes_) == len(params)
    for (tokens, arg), mirrored in zip(params, mirror._argtypes_):
        assert mirrored is DELIBERATE.get((name, arg), ctype(tokens)), f"{name} argument {arg}"


# ------------------------------------------------------------ defaults

def _field_value(struct: ctypes.Structure, name: str):
    value = getattr(struct, name)
    if name == "logit_bias":
        return bool(value)  # NULL or not
    if isinstance(value, float):
        return ctypes.c_float(value).value
    return value


def test_the_librarys_generate_defaults_are_generation_params_defaults():
    """llmodel_generate_default_params() and GenerationParams() agree on
    every field, so a C caller and a Python caller get the same generation."""
    c_defaults = native.lib().llmodel_generate_default_params()

    class ZeroDefaults:  # every field of the Python side comes from GenerationParams, none from C
        @staticmethod
        def llmodel_generate_default_params():
            return native.GenerateParams()

    py_defaults = GenerationParams().to_native(ZeroDefaults)
    differ = {name: (_field_value(c_defaults, name), _field_value(py_defaults, name))
              for name, _ in native.GenerateParams._fields_
              if _field_value(c_defaults, name) != _field_value(py_defaults, name)}
    assert not differ, f"C default, Python default: {differ}"


def test_generation_params_fill_every_field_of_the_native_struct():
    """to_native() leaves no field of llmodel_generate_params at what the
    library's defaults said: each one is set from GenerationParams."""
    def sentinel_struct() -> "native.GenerateParams":
        p = native.GenerateParams()
        for name, t in native.GenerateParams._fields_:
            if t is c_bool:
                setattr(p, name, True)
            elif t is c_float:
                setattr(p, name, 12345.5)
            elif name == "logit_bias":
                p.logit_bias = (native.LogitBias * 1)((99, 1.0))
            else:
                setattr(p, name, 12345)
        return p

    class SentinelDefaults:
        llmodel_generate_default_params = staticmethod(sentinel_struct)

    params = GenerationParams(context_shift=False, special=False, add_special=False, reuse_shifted=False)
    p = params.to_native(SentinelDefaults)
    left = [name for name, t in native.GenerateParams._fields_
            if (t is c_bool and getattr(p, name) is True)
            or (name == "logit_bias" and bool(p.logit_bias))
            or (t is not c_bool and name != "logit_bias" and getattr(p, name) in (12345, 12345.5))]
    assert not left
    # and every field of GenerationParams reaches the struct (special is parse_special)
    names = {f.name for f in dataclasses.fields(GenerationParams)} - {"special"} | {"parse_special"}
    assert names == {name for name, _ in native.GenerateParams._fields_} - {"n_logit_bias"}
