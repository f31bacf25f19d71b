"""How the package finds NVIDIA's CUDA wheels (gpt4all[cuda]) for the CUDA
module, without a GPU: which folder is chosen, in which order the libraries
open, and that nothing is touched without a module or a driver. The real
load on a GPU machine is in test_gpu_cuda.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpt4all import _cuda_runtime


def fake_wheels(site: Path, names=("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13")) -> Path:
    lib = site / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    for name in names:
        (lib / name).write_bytes(b"")
    return lib


@pytest.fixture
def opened(monkeypatch):
    calls = []
    monkeypatch.setattr(_cuda_runtime.ctypes, "CDLL", lambda path, *a, **k: calls.append(str(path)) or object())
    monkeypatch.setattr(_cuda_runtime, "_kept", [])
    monkeypatch.setattr(sys, "platform", "linux")
    return calls


def module_dir(tmp_path: Path) -> Path:
    d = tmp_path / "gpt4all-lib"
    d.mkdir()
    (d / "libggml-cuda.so").write_bytes(b"")
    return d


def test_opens_the_wheels_libraries_in_dependency_order(tmp_path, monkeypatch, opened):
    monkeypatch.setattr(_cuda_runtime, "_driver_present", lambda: True)
    incomplete = fake_wheels(tmp_path / "site1", names=("libcudart.so.13",))  # no cuBLAS: passed over
    complete = fake_wheels(tmp_path / "site2")
    monkeypatch.setattr(_cuda_runtime, "_nvidia_dirs", lambda: iter([incomplete.parents[1], complete.parents[1]]))
    _cuda_runtime.preload(module_dir(tmp_path))
    assert opened == [str(complete / n) for n in ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13")]


def test_finds_the_nvidia_namespace_package_on_sys_path(tmp_path, monkeypatch):
    fake_wheels(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "nvidia" or m.startswith("nvidia.")]:
        monkeypatch.delitem(sys.modules, name)
    assert (tmp_path / "site" / "nvidia").resolve() in [p.resolve() for p in _cuda_runtime._nvidia_dirs()]


def test_nothing_without_a_cuda_module(tmp_path, monkeypatch, opened):
    monkeypatch.setattr(_cuda_runtime, "_driver_present", lambda: True)
    monkeypatch.setattr(_cuda_runtime, "_nvidia_dirs", lambda: iter([fake_wheels(tmp_path / "s").parents[1]]))
    (tmp_path / "cpu-only").mkdir()
    _cuda_runtime.preload(tmp_path / "cpu-only")
    assert opened == []


def test_nothing_without_a_driver(tmp_path, monkeypatch, opened):
    monkeypatch.setattr(_cuda_runtime, "_driver_present", lambda: False)
    monkeypatch.setattr(_cuda_runtime, "_nvidia_dirs", lambda: iter([fake_wheels(tmp_path / "s").parents[1]]))
    _cuda_runtime.preload(module_dir(tmp_path))
    assert opened == []


def test_a_broken_install_is_passed_over_quietly(tmp_path, monkeypatch, caplog):
    def refuse(path, *a, **k):
        raise OSError(f"{path}: invalid ELF header")

    monkeypatch.setattr(_cuda_runtime, "_driver_present", lambda: True)
    monkeypatch.setattr(_cuda_runtime.ctypes, "CDLL", refuse)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(_cuda_runtime, "_nvidia_dirs", lambda: iter([fake_wheels(tmp_path / "s").parents[1]]))
    with caplog.at_level("DEBUG", logger="gpt4all"):
        _cuda_runtime.preload(module_dir(tmp_path))  # no exception
    assert "invalid ELF header" in caplog.text


def test_this_machine_has_no_driver_and_loads_nothing(tmp_path):
    # the real check, not patched: CI machines have no NVIDIA driver
    assert not _cuda_runtime._driver_present()
    _cuda_runtime.preload(module_dir(tmp_path))
    assert _cuda_runtime._kept == []
