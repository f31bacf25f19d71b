"""scripts/glslc_cache.py: the same shader compiled twice is answered from
the cache the second time (bit for bit, the dependency file rewritten for
the new output), an edited include misses, a failure is not cached, and calls
it does not understand go to glslc unchanged."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "scripts" / "glslc_cache.py"
GLSLC = shutil.which("glslc")
pytestmark = pytest.mark.skipif(GLSLC is None, reason="glslc is installed by scripts/test.sh")

SHADER = """#version 450
#include "common.glsl"
layout(local_size_x = 64) in;
layout(binding = 0) buffer Data { float v[]; };
void main() { v[gl_GlobalInvocationID.x] = scale(v[gl_GlobalInvocationID.x]); }
"""


def run(tmp: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPT4ALL_DEV_CACHE=str(tmp / "cache"), GLSLC=GLSLC)
    args = ["-fshader-stage=compute", "--target-env=vulkan1.2", str(tmp / "src" / "k.comp"), "-o", str(tmp / out),
            "-O", "-MD", "-MF", str(tmp / (out + ".d")), "-DFACTOR=2.0", *extra]
    return subprocess.run([sys.executable, str(WRAPPER), *args], capture_output=True, text=True, env=env)


@pytest.fixture
def shader(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "k.comp").write_text(SHADER)
    (tmp_path / "src" / "common.glsl").write_text("float scale(float x) { return x * FACTOR; }\n")
    return tmp_path


def entries(tmp: Path) -> int:
    return len(list((tmp / "cache" / "glslc").rglob("*.spv")))


def test_second_compile_comes_from_the_cache(shader):
    r = run(shader, "a.spv")
    assert r.returncode == 0, r.stderr
    assert entries(shader) == 1
    # the entry marked: what comes back is the cache's, not glslc's
    (entry,) = (shader / "cache" / "glslc").rglob("*.spv")
    assert entry.read_bytes() == (shader / "a.spv").read_bytes()
    entry.write_bytes(b"from the cache")
    r2 = run(shader, "b.spv")
    assert r2.returncode == 0, r2.stderr
    assert (shader / "b.spv").read_bytes() == b"from the cache"
    dep = (shader / "b.spv.d").read_text()
    assert str(shader / "b.spv") in dep and "a.spv" not in dep and "common.glsl" in dep


def test_an_edited_include_or_define_misses(shader):
    assert run(shader, "a.spv").returncode == 0
    (shader / "src" / "common.glsl").write_text("float scale(float x) { return x + FACTOR; }\n")
    assert run(shader, "b.spv").returncode == 0
    assert entries(shader) == 2
    assert run(shader, "c.spv", "-DOTHER=1").returncode == 0
    assert entries(shader) == 3
    assert (shader / "a.spv").read_bytes() != (shader / "b.spv").read_bytes()


def test_a_failure_is_not_cached(shader):
    (shader / "src" / "common.glsl").write_text("this is not GLSL\n")
    r = run(shader, "a.spv")
    assert r.returncode != 0 and r.stderr
    assert entries(shader) == 0


def test_other_calls_pass_through(shader, tmp_path):
    env = dict(os.environ, GPT4ALL_DEV_CACHE=str(tmp_path / "cache"), GLSLC=GLSLC)
    r = subprocess.run([sys.executable, str(WRAPPER), "--version"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "glslang" in (r.stdout + r.stderr).lower()
    # ggml's CMake probes glslc with -o - (to stdout): never cached
    r = subprocess.run([sys.executable, str(WRAPPER), "-o", "-", "-fshader-stage=compute", "--target-env=vulkan1.2",
                        str(shader / "src" / "k.comp"), "-DFACTOR=1.0"], capture_output=True, env=env)
    assert r.returncode == 0 and r.stdout[:4] == b"\x03\x02\x23\x07"  # SPIR-V's magic number
    assert entries(tmp_path) == 0
