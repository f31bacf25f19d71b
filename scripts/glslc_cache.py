#!/usr/bin/env -S python3 -S
"""glslc with a cache: what ccache does for C++, for ggml-vulkan's shaders.

ggml's Vulkan build compiles about 1,100 shader variants with glslc, minutes
on two cores, on every fresh clone (ccache covers the C++ only). Pass this
script as the compiler (scripts/test.sh does):

    cmake -DLLMODEL_VULKAN=ON -DVulkan_GLSLC_EXECUTABLE=scripts/glslc_cache.py ...

Each call is answered from $GPT4ALL_DEV_CACHE/glslc when the same glslc was
given the same arguments and the same shader sources before; otherwise the
real glslc (the first one on PATH that is not this script, or $GLSLC) runs
and a clean result (exit 0, nothing on stderr) is stored. The key covers the
source file and every file in its folder (where its #includes are), so an
edited shader or header misses. Calls it does not understand run glslc
unchanged. It runs as `python3 -S` (no site-packages): starting Python is
most of what a cache hit costs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_llama_cpp import cache_root  # noqa: E402

OUT_TOKEN = "@OUT@"


def real_glslc() -> str:
    env = os.environ.get("GLSLC")
    if env:
        return env
    me = Path(__file__).resolve()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "glslc"
        if candidate.is_file() and os.access(candidate, os.X_OK) and candidate.resolve() != me:
            return str(candidate)
    sys.exit("glslc_cache.py: no glslc on PATH")


def key_of(glslc: str, args: list, source: Path, replaced: set) -> str:
    h = hashlib.sha256()
    st = os.stat(glslc)
    h.update(f"{Path(glslc).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for i, arg in enumerate(args):
        h.update(b"\0" + (b"@" if i in replaced else arg.encode()))
    for path in sorted(p for p in source.parent.iterdir() if p.is_file()):
        h.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    h.update(b"\0source\0" + source.name.encode())
    return h.hexdigest()


def main() -> int:
    glslc = real_glslc()
    args = sys.argv[1:]
    try:
        out_i = args.index("-o") + 1
        out = args[out_i]
        sources = [i for i, a in enumerate(args) if not a.startswith("-") and i != out_i
                   and Path(a).suffix in (".comp", ".glsl") and Path(a).is_file()]
        dep_i = args.index("-MF") + 1 if "-MF" in args else None
    except (ValueError, IndexError):
        sources, out = [], "-"
    if out == "-" or len(sources) != 1:
        return subprocess.call([glslc, *args])
    source = Path(args[sources[0]])
    replaced = {out_i, sources[0]} | ({dep_i} if dep_i else set())
    key = key_of(glslc, args, source, replaced)
    entry = cache_root() / "glslc" / key[:2] / key
    spv, dep = entry.with_suffix(".spv"), entry.with_suffix(".d")
    if spv.is_file() and (dep_i is None or dep.is_file()):
        shutil.copyfile(spv, out)
        if dep_i is not None:
            Path(args[dep_i]).write_text(dep.read_text().replace(OUT_TOKEN, out))
        return 0
    r = subprocess.run([glslc, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sys.stdout.buffer.write(r.stdout)
    sys.stderr.buffer.write(r.stderr)
    if r.returncode == 0 and not r.stderr and Path(out).is_file():
        entry.parent.mkdir(parents=True, exist_ok=True)
        # written beside, then renamed: a parallel build never reads half an entry
        with tempfile.NamedTemporaryFile(dir=entry.parent, delete=False) as tmp:
            tmp.write(Path(out).read_bytes())
        if dep_i is not None:
            with tempfile.NamedTemporaryFile("w", dir=entry.parent, delete=False) as tmpd:
                tmpd.write(Path(args[dep_i]).read_text().replace(out, OUT_TOKEN))
            os.replace(tmpd.name, dep)
        os.replace(tmp.name, spv)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
