"""The Python mirror of backend/include/llmodel.h matches the header: every
struct's size and field offsets (measured by a C compiler), every enum value
and constant, and every status maps to an exception."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from conftest import ROOT
from gpt4all import _native as native
from gpt4all import errors
from gpt4all._pyllmodel import STOP_REASONS

HEADER = ROOT / "backend" / "include" / "llmodel.h"
STRUCTS = {
    "llmodel_load_params": native.LoadParams,
    "llmodel_generate_params": native.GenerateParams,
    "llmodel_generate_result": native.GenerateResult,
    "llmodel_model_info": native.ModelInfo,
    "llmodel_device_info": native.DeviceInfo,
}


def header_enum(name: str) -> dict:
    """{constant: value} of one `typedef enum name {...}` in the header."""
    body = re.search(r"typedef enum %s \{(.*?)\}" % name, HEADER.read_text(), re.S)
    assert body, name
    return {k: int(v) for k, v in re.findall(r"(LLMODEL_\w+)\s*=\s*(-?\d+)", body.group(1))}


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


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_struct_layout_matches_the_header(c_layout, struct):
    mirror = STRUCTS[struct]
    size, offsets = c_layout[struct]
    assert ctypes.sizeof(mirror) == size
    assert {name: getattr(mirror, name).offset for name, _ in mirror._fields_} == offsets
    # and no field of the header is missing from the mirror
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct), HEADER.read_text(), re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    declared = re.findall(r"(\w+);", body)
    assert declared == [name for name, _ in mirror._fields_]


def test_every_status_has_its_constant_and_exception():
    statuses = header_enum("llmodel_status")
    assert len(statuses) >= 14
    for name, value in statuses.items():
        assert getattr(native, name.replace("LLMODEL_", ""), None) == value, name
        if value not in (native.OK, native.ERR_BUFFER_TOO_SMALL):  # handled where they occur
            assert native._EXCEPTIONS.get(value), f"{name} has no exception"
    assert native._EXCEPTIONS[native.ERR_CANCELLED] is errors.CancellationError
    # and the library names every one of them as the header does
    for name, value in statuses.items():
        assert native.lib().llmodel_status_name(value).decode() == name


def test_stop_reasons_and_log_levels_match_the_header():
    reasons = header_enum("llmodel_stop_reason")
    assert {v: k.replace("LLMODEL_STOP_", "").lower() for k, v in reasons.items()} == STOP_REASONS
    levels = header_enum("llmodel_log_level")
    assert levels == {"LLMODEL_LOG_DEBUG": 1, "LLMODEL_LOG_INFO": 2, "LLMODEL_LOG_WARN": 3, "LLMODEL_LOG_ERROR": 4}


def test_constants_match_the_header():
    text = HEADER.read_text()

    def define(name: str) -> str:
        return re.search(r"#define %s (.+)" % name, text).group(1).strip()

    assert int(define("LLMODEL_ABI_VERSION")) == native.ABI_VERSION == native.lib().llmodel_abi_version()
    assert int(define("LLMODEL_MAX_THREADS")) == native.MAX_THREADS
    assert define("LLMODEL_SEED_RANDOM") == "UINT32_MAX" and native.SEED_RANDOM == 2**32 - 1
    assert define("LLMODEL_TOKEN_NONE") == "((llmodel_token)-1)" and native.TOKEN_NONE == -1


def test_every_header_function_is_declared_once():
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    in_header = set(re.findall(r"LLMODEL_API [^;(]*?\b(llmodel_\w+)\s*\(", text))
    declared = [name for name, _, _ in native._FUNCTIONS]
    assert len(declared) == len(set(declared))
    assert in_header == set(declared)
