"""Which device a ``device=`` word means: the original package's words, as a
pure function over a list of devices.

Nothing here touches the native library: the caller passes the devices
(``_pyllmodel.list_devices()``, or a list made up for a test), so the rules
can be tested on a machine without a GPU.

The words, matched case-insensitively:

- ``None``: the CPU on Linux and Windows; on Apple silicon (macOS on arm64)
  the Metal GPU when the model file is under 53% of the RAM, else the CPU
  (the original's rule).
- ``"cpu"``: the CPU.
- ``"gpu"``: the best GPU: the one with the most memory, the first listed
  on a tie.
- a backend: ``"cuda"``, ``"vulkan"`` (``"kompute"``, the original's GPU
  backend, is its alias), ``"metal"``, ``"rocm"`` (alias ``"hip"``): the
  best GPU of that backend.
- ``"<backend>:<name>"``: the GPU of that backend with that name, as
  [`GPT4All.list_gpus`][gpt4all.GPT4All.list_gpus] writes it
  (``"cuda:NVIDIA H100 80GB HBM3"``, ``"kompute:AMD Radeon RX 7900 XTX"``).
  ``"<backend>:gpu"`` and ``"<backend>:<vendor>"`` are the best GPU of that
  backend (of that vendor), as the original accepted.
- a vendor: ``"nvidia"``, ``"amd"``, ``"intel"`` (``"apple"``): the best GPU
  of that vendor.
- an exact name: the device's description (``"NVIDIA H100 80GB HBM3"``) or
  the engine's own name for it (``"CUDA0"``, ``"Vulkan1"``).

Earlier rules win: an exact ``"<backend>:<name>"``, then an exact name, then
``"gpu"``, backends and vendors.
"""
from __future__ import annotations

import os
import platform as _platform
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

from . import errors

if TYPE_CHECKING:
    from ._pyllmodel import Device

__all__ = ["select_device", "gpu_names", "backend_word", "memory_needed", "MEMORY_MARGIN_FIXED",
           "MEMORY_MARGIN_SHARE", "METAL_RAM_SHARE"]

MiB = 1 << 20
GiB = 1 << 30

# What a model needs on a GPU beyond its weights (the context's KV cache and
# llama.cpp's compute buffers): a share of the file plus a fixed amount. It
# errs low on purpose: a check that refuses a model that would have fitted
# is worse than one that lets llama.cpp report the failure itself.
MEMORY_MARGIN_SHARE = 0.10
"""Share of the model file's size added for the context (see [`memory_needed`][gpt4all._devices.memory_needed])."""
MEMORY_MARGIN_FIXED = 256 * MiB
"""Bytes added for the compute buffers (see [`memory_needed`][gpt4all._devices.memory_needed])."""

METAL_RAM_SHARE = 0.53
"""``device=None`` on Apple silicon runs on the CPU when the model file is
this share of the RAM or more (the original's rule: on a 16 GB Mac a 13B
Q4_0 model, 52%, works on Metal and a 13B Q4_K_M, 55%, does not)."""

# The backends as users write them; the engine's own names lower-cased
# ("CUDA", "Vulkan", "MTL", "ROCm") map through here too.
_BACKEND_ALIASES: Dict[str, str] = {"kompute": "vulkan", "mtl": "metal", "hip": "rocm"}


def _norm(word: str) -> str:
    return word.strip().casefold()


def backend_word(backend: str) -> str:
    """A backend name as users write it: ``"CUDA"`` → ``"cuda"``, the
    engine's ``"MTL"`` → ``"metal"``, ``"kompute"`` → ``"vulkan"``."""
    b = _norm(backend)
    return _BACKEND_ALIASES.get(b, b)


def memory_needed(model_size: int) -> int:
    """The GPU memory a model of ``model_size`` bytes is taken to need: the
    file, plus 10% of it for the context (KV cache), plus 256 MiB for the
    compute buffers. 0 when the size is unknown (0)."""
    if model_size <= 0:
        return 0
    return model_size + int(model_size * MEMORY_MARGIN_SHARE) + MEMORY_MARGIN_FIXED


def _size(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{max(n, 0) / MiB:.0f} MiB"


def _gpus(devices: Sequence["Device"]) -> List["Device"]:
    return [d for d in devices if d.is_gpu]


def gpu_names(devices: Sequence["Device"]) -> List[str]:
    """The ``"<backend>:<name>"`` string of each GPU, in list order, as
    [`select_device`][gpt4all._devices.select_device] accepts them back:
    ``"cuda:NVIDIA H100 80GB HBM3"``, ``"vulkan:AMD Radeon Graphics (RADV
    GFX1103_R1)"``, ``"metal:Apple M2 Pro"``.

    The name is the device's description; a second GPU of one backend with
    the same description is named by the engine's name instead
    (``"cuda:CUDA1"``), so that each string picks its own device.
    """
    out: List[str] = []
    seen: Set[Tuple[str, str]] = set()
    for d in _gpus(devices):
        backend = backend_word(d.backend)
        name = d.description or d.name
        if (backend, _norm(name)) in seen:
            name = d.name
        seen.add((backend, _norm(name)))
        out.append(f"{backend}:{name}")
    return out


def _best(candidates: Sequence["Device"]) -> "Device":
    best = candidates[0]
    for d in candidates[1:]:
        if d.memory_total > best.memory_total:  # strictly more: ties keep list order
            best = d
    return best


def _fits(d: "Device", needed: int) -> bool:
    # memory_free 0 means the backend does not say: the load itself will tell
    return needed <= 0 or d.memory_free <= 0 or d.memory_free >= needed


def _full_name(d: "Device") -> str:
    return f"{backend_word(d.backend)}:{d.description or d.name}"


def _memory_error(word: str, d: "Device", model_size: int) -> errors.DeviceMemoryError:
    needed = memory_needed(model_size)
    return errors.DeviceMemoryError(
        f"device={word!r}: {_full_name(d)} ({d.name}) has {_size(d.memory_free)} free of "
        f"{_size(d.memory_total)}, and the model needs about {_size(needed)} (the {_size(model_size)} file "
        f"plus {_size(needed - model_size)} for the context and compute buffers); free memory on the GPU, "
        f"choose a smaller model, offload fewer layers (ngl=), or use device='cpu'")


def _no_device_error(word: str, devices: Sequence["Device"]) -> errors.NoDeviceError:
    names = gpu_names(devices)
    if not names:
        return errors.NoDeviceError(f"device={word!r}: no GPU was found on this machine (none that this build "
                                    f"of gpt4all can use); use device='cpu'")
    listed = ", ".join(repr(n) for n in names)
    return errors.NoDeviceError(f"device={word!r} matches no GPU; this machine has {listed} "
                                f"(or use 'cpu', 'gpu', a backend or a vendor)")


def _pick(word: str, candidates: Sequence["Device"], model_size: int, *, best: bool = True) -> "Device":
    """The best (else the first) of candidates that has room for the model,
    as the original chose among the GPUs with enough memory; else an error
    naming the one that would have been chosen."""
    needed = memory_needed(model_size)
    fitting = [d for d in candidates if _fits(d, needed)]
    if fitting:
        return _best(fitting) if best else fitting[0]
    raise _memory_error(word, _best(candidates) if best else candidates[0], model_size)


def _generic(want: str, gpus: Sequence["Device"]) -> List["Device"]:
    """The GPUs a word for many of them means: "gpu", a backend, a vendor."""
    if want == "gpu":
        return list(gpus)
    backend = backend_word(want)
    return [d for d in gpus if backend_word(d.backend) == backend or (d.vendor and _norm(d.vendor) == want)]


def _ram_total() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def select_device(word: Optional[str], devices: Sequence["Device"], *, model_size: int = 0,
                  platform: str = sys.platform, machine: str = _platform.machine(),
                  ram_total: Optional[int] = None, check_memory: bool = True) -> Optional["Device"]:
    """The device a ``device=`` word chooses: ``None`` for the CPU, else the GPU.

    See the module's description for the words. When a GPU is chosen and
    its backend says how much memory is free, the model must fit:
    [`memory_needed`][gpt4all._devices.memory_needed] (the file's size plus
    10% and 256 MiB for the context and compute buffers) must not exceed
    the free memory. A word that several GPUs match (``"gpu"``, a backend,
    a vendor) takes the best of those the model fits on.

    Args:
        word: what the user passed as ``device``.
        devices: every device the engine found (``_pyllmodel.list_devices()``);
            devices that are not GPUs are ignored.
        model_size: the model file's size in bytes; 0 (unknown) skips the
            memory check and counts as fitting in RAM.
        platform: ``sys.platform`` of the machine.
        machine: ``platform.machine()`` of the machine.
        ram_total: the RAM in bytes, for ``device=None`` on Apple silicon;
            default: this machine's.
        check_memory: False skips the memory check: for a partial offload,
            whose share of the model is not known before loading.

    Raises:
        NoDeviceError: the word matches no GPU; the message lists the GPUs
            that exist (or says that there is none).
        DeviceMemoryError: the chosen GPU has less memory free than the
            model needs; the message names both figures.
        InvalidArgumentError: ``word`` is not a string.
    """
    checked = model_size if check_memory else 0  # the size the memory check sees
    if word is None:
        if platform != "darwin" or machine != "arm64":
            return None
        metal = [d for d in _gpus(devices) if backend_word(d.backend) == "metal"]
        if not metal:
            return None
        ram = ram_total if ram_total is not None else _ram_total()
        if ram and model_size >= METAL_RAM_SHARE * ram:
            return None
        # not asked for a GPU: one without room means the CPU, not an error
        fitting = [d for d in metal if _fits(d, memory_needed(checked))]
        return _best(fitting) if fitting else None
    if not isinstance(word, str):
        raise errors.InvalidArgumentError(f"device must be a string or None, not {type(word).__name__}")
    want = _norm(word)
    if want in ("", "cpu"):
        return None
    gpus = _gpus(devices)

    def among(name: str, candidates: List["Device"]) -> Optional["Device"]:
        # an exact name first, then "gpu", a backend or a vendor
        exact = [d for d in candidates if name in (_norm(d.description), _norm(d.name))]
        if exact:
            return _pick(word, exact, checked, best=False)
        generic = _generic(name, candidates)
        return _pick(word, generic, checked) if generic else None

    # "<backend>:<name>" (and "<backend>:gpu", "<backend>:<vendor>")
    prefix, colon, rest = want.partition(":")
    if colon:
        backend = backend_word(prefix)
        chosen = among(rest.strip(), [d for d in gpus if backend_word(d.backend) == backend])
        if chosen is not None:
            return chosen
    chosen = among(want, gpus)
    if chosen is not None:
        return chosen
    raise _no_device_error(word, devices)
