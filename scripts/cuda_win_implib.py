#!/usr/bin/env python3
"""cuBLAS import libraries for a Windows toolkit assembled from NVIDIA's wheels.

nvidia-cublas 13.0.2.14 (win_amd64) ships nvidia/cu13/bin/x86_64/cublas64_13.dll
and cublasLt64_13.dll and the headers, but no cublas.lib / cublasLt.lib, so
FindCUDAToolkit finds no CUDA::cublas and ggml-cuda cannot link. (The runtime
wheel does ship lib/x64/cudart.lib and lib/x64/cuda.lib.) This makes the two
import libraries from the DLLs' export tables with MSVC's own tools:

    dumpbin /exports X.dll  ->  X.def  ->  lib /def:X.def /machine:x64 /out:lib/x64/X.lib

Run it in an MSVC developer environment (dumpbin and lib on PATH):
    python cuda_win_implib.py C:/cuda-13.0/nvidia/cu13
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

LIBS = {"cublas": "cublas64_13.dll", "cublasLt": "cublasLt64_13.dll"}
# dumpbin's export rows: ordinal, hint, RVA, name (forwarders add "(forwarded to ...)")
ROW = re.compile(r"^\s+\d+\s+[0-9A-Fa-f]+\s+(?:[0-9A-Fa-f]{8}\s+)?([A-Za-z_][\w@?$]*)")


def exports(dll: Path) -> list:
    out = subprocess.run(["dumpbin", "/nologo", "/exports", str(dll)], check=True,
                         capture_output=True, text=True).stdout
    names, in_table = [], False
    for line in out.splitlines():
        if re.match(r"^\s+ordinal\s+hint\s+RVA\s+name", line):
            in_table = True
            continue
        if in_table:
            if line.strip().startswith("Summary"):
                break
            m = ROW.match(line)
            if m:
                names.append(m.group(1))
    return names


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    out_dir = root / "lib" / "x64"
    out_dir.mkdir(parents=True, exist_ok=True)
    for lib, dll_name in LIBS.items():
        target = out_dir / f"{lib}.lib"
        if target.exists():
            continue
        dll = root / "bin" / "x86_64" / dll_name
        if not dll.exists():
            sys.exit(f"implib: {dll} is missing (is nvidia-cublas installed into {root}?)")
        names = exports(dll)
        if not names:
            sys.exit(f"implib: no exports read from {dll}")
        deffile = out_dir / f"{lib}.def"
        deffile.write_text(f"LIBRARY {dll_name}\nEXPORTS\n" + "".join(f"    {n}\n" for n in names))
        subprocess.run(["lib", "/nologo", "/machine:x64", f"/def:{deffile}", f"/out:{target}"], check=True)
        print(f"{target}: {len(names)} exports of {dll_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
