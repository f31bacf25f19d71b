"""The ``device=`` words: the pure selection over made-up device lists, and
what this machine (no GPU) does with them for real."""
from __future__ import annotations

from typing import List, Optional, Sequence

import pytest

from conftest import run_python
from gpt4all import GPT4All, errors
from gpt4all._devices import (METAL_RAM_SHARE, backend_word, gpu_names, memory_needed, select_device)
from gpt4all._pyllmodel import Device, LLModel, list_devices

MiB = 1 << 20
GiB = 1 << 30

CPU = Device("CPU", "CPU", "Intel(R) Xeon(R) Platinum 8480+", "", False, 0, 0)
H100 = Device("CUDA", "CUDA0", "NVIDIA H100 80GB HBM3", "NVIDIA", True, 80 * GiB, 79 * GiB)
IGPU = Device("Vulkan", "Vulkan0", "Intel(R) UHD Graphics 770 (ADL-S GT1)", "Intel", True, 16 * GiB, 15 * GiB)
RX6600 = Device("Vulkan", "Vulkan0", "AMD Radeon RX 6600 (RADV NAVI23)", "AMD", True, 8 * GiB, 7 * GiB)
RTX4090 = Device("Vulkan", "Vulkan1", "NVIDIA GeForce RTX 4090", "NVIDIA", True, 24 * GiB, 23 * GiB)
M2 = Device("MTL", "MTL0", "Apple M2 Pro", "Apple", True, 21 * GiB, 21 * GiB)
M2_CPU = Device("CPU", "CPU", "Apple M2 Pro", "", False, 0, 0)
XTX = Device("ROCm", "ROCm0", "AMD Radeon RX 7900 XTX", "AMD", True, 24 * GiB, 24 * GiB)
H100_B = Device("CUDA", "CUDA1", "NVIDIA H100 80GB HBM3", "NVIDIA", True, 80 * GiB, 79 * GiB)

CUDA_AND_IGPU = [H100, CPU, IGPU]
TWO_VULKAN = [CPU, RX6600, RTX4090]  # the smaller one listed first
APPLE = [M2, M2_CPU]
NO_GPU = [CPU]
TWO_H100 = [H100, H100_B, CPU]
ROCM = [XTX, CPU]
ALL_LISTS = [CUDA_AND_IGPU, TWO_VULKAN, APPLE, NO_GPU, [], TWO_H100, ROCM]

LINUX = dict(platform="linux", machine="x86_64")
MAC = dict(platform="darwin", machine="arm64", ram_total=32 * GiB)


def pick(word: Optional[str], devices: Sequence[Device], **kw) -> Optional[Device]:
    return select_device(word, devices, **{**LINUX, **kw})


# ------------------------------------------------------------ the words


@pytest.mark.parametrize("devices,word,expected", [
    # the CPU
    (CUDA_AND_IGPU, "cpu", None),
    (CUDA_AND_IGPU, "", None),
    (NO_GPU, "cpu", None),
    # "gpu": the most memory
    (CUDA_AND_IGPU, "gpu", H100),
    (TWO_VULKAN, "gpu", RTX4090),
    (APPLE, "gpu", M2),
    (ROCM, "gpu", XTX),
    # a backend, and kompute as vulkan's alias
    (CUDA_AND_IGPU, "cuda", H100),
    (CUDA_AND_IGPU, "vulkan", IGPU),
    (CUDA_AND_IGPU, "kompute", IGPU),
    (TWO_VULKAN, "vulkan", RTX4090),
    (TWO_VULKAN, "kompute", RTX4090),
    (APPLE, "metal", M2),
    (ROCM, "rocm", XTX),
    (ROCM, "hip", XTX),
    # "<backend>:<name>", the name a description or the engine's name
    (CUDA_AND_IGPU, "cuda:NVIDIA H100 80GB HBM3", H100),
    (CUDA_AND_IGPU, "vulkan:Intel(R) UHD Graphics 770 (ADL-S GT1)", IGPU),
    (CUDA_AND_IGPU, "kompute:Intel(R) UHD Graphics 770 (ADL-S GT1)", IGPU),
    (TWO_VULKAN, "kompute:AMD Radeon RX 6600 (RADV NAVI23)", RX6600),
    (TWO_VULKAN, "vulkan:Vulkan0", RX6600),
    (APPLE, "metal:Apple M2 Pro", M2),
    (TWO_H100, "cuda:CUDA1", H100_B),
    # "<backend>:gpu" and "<backend>:<vendor>", as the original accepted
    (CUDA_AND_IGPU, "kompute:gpu", IGPU),
    (CUDA_AND_IGPU, "cuda:nvidia", H100),
    (TWO_VULKAN, "kompute:amd", RX6600),
    (TWO_VULKAN, "vulkan:gpu", RTX4090),
    # a vendor
    (CUDA_AND_IGPU, "nvidia", H100),
    (CUDA_AND_IGPU, "intel", IGPU),
    (TWO_VULKAN, "amd", RX6600),
    (TWO_VULKAN, "nvidia", RTX4090),
    (ROCM, "amd", XTX),
    (APPLE, "apple", M2),
    # an exact name: the description, or the engine's name
    (CUDA_AND_IGPU, "NVIDIA H100 80GB HBM3", H100),
    (CUDA_AND_IGPU, "Intel(R) UHD Graphics 770 (ADL-S GT1)", IGPU),
    (TWO_VULKAN, "NVIDIA GeForce RTX 4090", RTX4090),
    (CUDA_AND_IGPU, "CUDA0", H100),
    (TWO_VULKAN, "Vulkan0", RX6600),
    (APPLE, "MTL0", M2),
    (APPLE, "Apple M2 Pro", M2),
])
def test_words(devices, word, expected):
    assert pick(word, devices) is expected


@pytest.mark.parametrize("devices,word,expected", [
    (CUDA_AND_IGPU, "CPU", None),
    (CUDA_AND_IGPU, "  Cpu ", None),
    (CUDA_AND_IGPU, "GPU", H100),
    (CUDA_AND_IGPU, "Cuda", H100),
    (CUDA_AND_IGPU, "KOMPUTE", IGPU),
    (CUDA_AND_IGPU, "Vulkan", IGPU),
    (CUDA_AND_IGPU, "NVIDIA", H100),
    (CUDA_AND_IGPU, "CUDA:nvidia h100 80gb hbm3", H100),
    (CUDA_AND_IGPU, "Kompute:INTEL(R) UHD GRAPHICS 770 (ADL-S GT1)", IGPU),
    (CUDA_AND_IGPU, "nvidia h100 80gb hbm3", H100),
    (CUDA_AND_IGPU, "cuda0", H100),
    (TWO_VULKAN, "AMD", RX6600),
    (APPLE, "METAL", M2),
    (APPLE, "Metal:APPLE M2 PRO", M2),
])
def test_case_does_not_matter(devices, word, expected):
    assert pick(word, devices) is expected


def test_exact_name_before_backend_and_vendor():
    # a GPU whose description is a vendor word is chosen by that exact name
    named = Device("Vulkan", "Vulkan1", "nvidia", "NVIDIA", True, 1 * GiB, 1 * GiB)
    assert pick("nvidia", [H100, named]) is named
    # and "<backend>:<name>" before both
    gpu_named = Device("Vulkan", "Vulkan1", "gpu", "", True, 1 * GiB, 1 * GiB)
    assert pick("vulkan:gpu", [IGPU, gpu_named]) is gpu_named


def test_best_gpu_ties_keep_list_order():
    assert pick("gpu", TWO_H100) is H100
    assert pick("gpu", [H100_B, H100]) is H100_B
    assert pick("nvidia", TWO_H100) is H100


def test_devices_that_are_not_gpus_are_never_chosen():
    blas = Device("BLAS", "BLAS", "OpenBLAS", "", False, 0, 0)
    with pytest.raises(errors.NoDeviceError):
        pick("blas", [CPU, blas])
    with pytest.raises(errors.NoDeviceError):
        pick("cpu:CPU", [CPU])
    assert pick("gpu", [CPU, blas, IGPU]) is IGPU


def test_backend_words():
    assert [backend_word(b) for b in ("CUDA", "Vulkan", "MTL", "ROCm", "kompute", "Metal", "hip")] == \
        ["cuda", "vulkan", "metal", "rocm", "vulkan", "metal", "rocm"]


def test_word_must_be_a_string():
    with pytest.raises(errors.InvalidArgumentError, match="string or None"):
        pick(0, CUDA_AND_IGPU)  # type: ignore[arg-type]


# ------------------------------------------------------------ list_gpus strings


def test_gpu_names():
    assert gpu_names(CUDA_AND_IGPU) == ["cuda:NVIDIA H100 80GB HBM3",
                                        "vulkan:Intel(R) UHD Graphics 770 (ADL-S GT1)"]
    assert gpu_names(TWO_VULKAN) == ["vulkan:AMD Radeon RX 6600 (RADV NAVI23)", "vulkan:NVIDIA GeForce RTX 4090"]
    assert gpu_names(APPLE) == ["metal:Apple M2 Pro"]
    assert gpu_names(ROCM) == ["rocm:AMD Radeon RX 7900 XTX"]
    assert gpu_names(NO_GPU) == [] and gpu_names([]) == []
    # a second GPU with the same description goes by the engine's name
    assert gpu_names(TWO_H100) == ["cuda:NVIDIA H100 80GB HBM3", "cuda:CUDA1"]


@pytest.mark.parametrize("devices", ALL_LISTS, ids=lambda ds: "+".join(d.name for d in ds) or "empty")
def test_every_gpu_name_chooses_its_gpu(devices: List[Device]):
    gpus = [d for d in devices if d.is_gpu]
    names = gpu_names(devices)
    assert len(names) == len(gpus)
    for name, gpu in zip(names, gpus):
        assert pick(name, devices, model_size=1 * GiB) is gpu, name
        assert pick(name.upper(), devices) is gpu, name
        assert pick(name.replace("vulkan:", "kompute:"), devices) is gpu, name


# ------------------------------------------------------------ no match


@pytest.mark.parametrize("word", ["metal", "amd", "cuda:Intel(R) UHD Graphics 770 (ADL-S GT1)",
                                  "cuda:NVIDIA H100", "NVIDIA H100", "cuda:intel", "tpu", "CUDA7"])
def test_a_word_that_matches_nothing_lists_the_gpus(word):
    with pytest.raises(errors.NoDeviceError) as e:
        pick(word, CUDA_AND_IGPU)
    msg = str(e.value)
    assert repr(word) in msg
    assert "'cuda:NVIDIA H100 80GB HBM3'" in msg and "'vulkan:Intel(R) UHD Graphics 770 (ADL-S GT1)'" in msg
    assert isinstance(e.value, ValueError)  # what code written for the original catches


@pytest.mark.parametrize("devices", [NO_GPU, []], ids=["cpu-only", "empty"])
@pytest.mark.parametrize("word", ["gpu", "cuda", "kompute", "metal", "nvidia", "cuda:NVIDIA H100 80GB HBM3"])
def test_no_gpu_at_all(devices, word):
    with pytest.raises(errors.NoDeviceError, match="no GPU was found") as e:
        pick(word, devices)
    assert "device='cpu'" in str(e.value)
    assert pick("cpu", devices) is None and pick(None, devices) is None


# ------------------------------------------------------------ memory


def _figure(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def test_memory_needed_rule():
    assert memory_needed(0) == 0
    assert memory_needed(10 * GiB) == 10 * GiB + GiB + 256 * MiB


def test_a_gpu_without_room_names_needed_and_free():
    small = Device("CUDA", "CUDA0", "NVIDIA GeForce GTX 1050", "NVIDIA", True, 2 * GiB, 1536 * MiB)
    size = 4 * GiB
    with pytest.raises(errors.DeviceMemoryError) as e:
        pick("cuda", [small, CPU], model_size=size)
    msg = str(e.value)
    assert "1.5 GiB free" in msg and "of 2.0 GiB" in msg
    assert f"needs about {_figure(memory_needed(size))}" in msg
    assert "cuda:NVIDIA GeForce GTX 1050" in msg and "device='cpu'" in msg
    # catchable as what the original raised (ValueError) and as an allocation failure
    assert isinstance(e.value, (errors.NoDeviceError)) and isinstance(e.value, ValueError)
    assert isinstance(e.value, errors.OutOfMemoryError) and isinstance(e.value, MemoryError)


def test_memory_figures_in_mib():
    tiny = Device("Vulkan", "Vulkan0", "llvmpipe", "", True, 512 * MiB, 200 * MiB)
    with pytest.raises(errors.DeviceMemoryError, match=r"200 MiB free of 512 MiB.*needs about 366 MiB"):
        pick("vulkan:llvmpipe", [tiny], model_size=100 * MiB)


def test_the_memory_check_only_when_known_and_asked():
    unknown = Device("Vulkan", "Vulkan0", "Some GPU", "", True, 0, 0)
    assert pick("gpu", [unknown], model_size=100 * GiB) is unknown  # free memory not reported
    assert pick("gpu", [RX6600], model_size=0) is RX6600  # model size not known
    assert pick("gpu", [RX6600], model_size=100 * GiB, check_memory=False) is RX6600  # partial offload
    assert pick("gpu", [RX6600], model_size=6 * GiB) is RX6600  # 6.85 GiB needed, 7 free


def test_a_word_for_many_gpus_takes_the_best_with_room():
    full = Device("Vulkan", "Vulkan1", "NVIDIA GeForce RTX 4090", "NVIDIA", True, 24 * GiB, 1 * GiB)
    devices = [CPU, RX6600, full]
    assert pick("gpu", devices, model_size=4 * GiB) is RX6600
    assert pick("vulkan", devices, model_size=4 * GiB) is RX6600
    # none with room: the error names the best one
    with pytest.raises(errors.DeviceMemoryError, match="NVIDIA GeForce RTX 4090"):
        pick("gpu", devices, model_size=20 * GiB)
    # an exact name is that GPU or an error, even when another has room
    with pytest.raises(errors.DeviceMemoryError, match=r"1\.0 GiB free of 24\.0 GiB"):
        pick("vulkan:NVIDIA GeForce RTX 4090", devices, model_size=4 * GiB)
    with pytest.raises(errors.DeviceMemoryError):
        pick("nvidia", devices, model_size=4 * GiB)


# ------------------------------------------------------------ device=None


def test_none_is_the_cpu_on_linux_and_windows():
    for devices in ALL_LISTS:
        for plat, machine in [("linux", "x86_64"), ("linux", "aarch64"), ("win32", "AMD64"), ("win32", "ARM64")]:
            assert select_device(None, devices, platform=plat, machine=machine, model_size=GiB) is None


def test_none_on_apple_silicon_is_metal_when_the_model_fits():
    ram = MAC["ram_total"]
    assert select_device(None, APPLE, **MAC, model_size=4 * GiB) is M2
    assert select_device(None, APPLE, **MAC, model_size=0) is M2
    just_under = int(METAL_RAM_SHARE * ram) - 1
    assert select_device(None, APPLE, **MAC, model_size=just_under) is M2
    # the original's rule: 53% of the RAM or more runs on the CPU
    assert select_device(None, APPLE, **MAC, model_size=int(METAL_RAM_SHARE * ram) + 1) is None
    assert select_device(None, APPLE, **MAC, model_size=18 * GiB) is None  # 56%
    # the RAM of this machine when not given
    assert select_device(None, APPLE, platform="darwin", machine="arm64", model_size=1) is M2


def test_none_on_apple_silicon_without_metal_room_is_the_cpu():
    busy = Device("MTL", "MTL0", "Apple M1", "Apple", True, 10 * GiB, 1 * GiB)
    # not asked for a GPU: the CPU, not an error
    assert select_device(None, [busy, M2_CPU], **MAC, model_size=4 * GiB) is None
    assert select_device(None, [busy, M2_CPU], **MAC, model_size=4 * GiB, check_memory=False) is busy


def test_none_on_an_intel_mac_or_without_metal_is_the_cpu():
    assert select_device(None, APPLE, platform="darwin", machine="x86_64", ram_total=32 * GiB) is None
    assert select_device(None, NO_GPU, **MAC) is None
    assert select_device(None, [], **MAC) is None


def test_explicit_words_do_not_depend_on_the_platform():
    assert select_device("gpu", APPLE, **MAC, model_size=18 * GiB) is M2
    assert select_device("cpu", APPLE, **MAC) is None
    assert select_device("gpu", CUDA_AND_IGPU, platform="win32", machine="AMD64") is H100


# ------------------------------------------------------------ this machine


def _has_gpu() -> bool:
    return any(d.is_gpu for d in list_devices())


def test_list_gpus_on_this_machine():
    names = GPT4All.list_gpus()
    assert names == gpu_names(list_devices())
    if not _has_gpu():
        assert names == []  # the original raised here
    for name in names:  # a GPU build: each string is accepted back
        assert select_device(name, list_devices()) is not None


def test_gpu_on_a_machine_without_one(smollm2_path, capfd):
    if _has_gpu():
        pytest.skip("this machine has a GPU")
    capfd.readouterr()
    for word in ["gpu", "cuda", "kompute", "nvidia", "cuda:NVIDIA H100 80GB HBM3"]:
        with pytest.raises(errors.NoDeviceError, match="no GPU was found") as e:
            GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False, device=word)
        assert repr(word) in str(e.value)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_cpu_words_load_on_the_cpu(smollm2_path, capfd):
    for word in ["cpu", "CPU"]:
        with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False,
                     device=word, n_ctx=256) as m:
            assert m.backend == "cpu" and m.device is None
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_missing_file_is_reported_before_the_device(tmp_path):
    with pytest.raises(errors.ModelNotFoundError):
        LLModel(tmp_path / "missing.gguf", device="gpu")


def test_first_use_in_a_fresh_process_prints_nothing(smollm2_path):
    r = run_python(f"""
import sys
import gpt4all
assert "gpt4all._devices" not in sys.modules  # import gpt4all stays cheap
from gpt4all import GPT4All, NoDeviceError
gpus = GPT4All.list_gpus()
if not gpus:
    try:
        GPT4All({smollm2_path.name!r}, model_path={str(smollm2_path.parent)!r}, allow_download=False, device="gpu")
    except NoDeviceError:
        pass
    else:
        raise SystemExit("no error")
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
