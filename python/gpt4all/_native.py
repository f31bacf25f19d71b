"""The one place that finds, opens and declares the native llmodel library.

The library is opened on first use (so ``import gpt4all`` stays cheap) and
proven by calling its ABI-version symbol. Every C function it exports is
declared in ``_FUNCTIONS`` below, mirroring ``backend/include/llmodel.h``.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_double, c_float, c_int, c_int32,
                    c_size_t, c_uint32, c_uint64, c_void_p)
from pathlib import Path
from typing import Any, List, Optional

from . import errors

ABI_VERSION = 6
LIBRARY_ENV = "GPT4ALL_LIBRARY"  # a path to the llmodel library, or to its folder

TOKEN_NONE = -1
SEED_RANDOM = 0xFFFFFFFF
INT32_MAX = 2**31 - 1
MAX_THREADS = 512  # LLMODEL_MAX_THREADS
MAX_PARALLEL = 64  # LLMODEL_MAX_PARALLEL

# llmodel_pooling values (llmodel_embedder_params.pooling)
POOLING_MODEL = -1
POOLING_MEAN = 1
POOLING_CLS = 2
POOLING_LAST = 3

# llmodel_log_level values
LOG_DEBUG = 1
LOG_INFO = 2
LOG_WARN = 3
LOG_ERROR = 4

log = logging.getLogger("gpt4all.native")
# A library prints nothing unless the application configures logging.
logging.getLogger("gpt4all").addHandler(logging.NullHandler())


# ------------------------------------------------------------------ types

class _Model(Structure):
    """Opaque ``llmodel_model``; only pointers to it are ever used."""


ModelPtr = POINTER(_Model)


class _Conversation(Structure):
    """Opaque ``llmodel_conversation``."""


ConversationPtr = POINTER(_Conversation)


class _Stream(Structure):
    """Opaque ``llmodel_stream``."""


StreamPtr = POINTER(_Stream)


class _Embedder(Structure):
    """Opaque ``llmodel_embedder``."""


EmbedderPtr = POINTER(_Embedder)


class LoadParams(Structure):
    _fields_ = [
        ("n_ctx", c_int32),
        ("n_batch", c_int32),
        ("n_threads", c_int32),
        ("n_gpu_layers", c_int32),
        ("device", c_char_p),
        ("use_mmap", c_bool),
        ("n_parallel", c_int32),
        ("f32_weights", c_bool),
    ]


class LogitBias(Structure):
    _fields_ = [
        ("token", c_int32),
        ("bias", c_float),
    ]


class GenerateParams(Structure):
    _fields_ = [
        ("temp", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("repeat_last_n", c_int32),
        ("seed", c_uint32),
        ("n_predict", c_int32),
        ("n_batch", c_int32),
        ("context_shift", c_bool),
        ("n_keep", c_int32),
        ("parse_special", c_bool),
        ("add_special", c_bool),
        ("reuse_shifted", c_bool),
        ("frequency_penalty", c_float),
        ("presence_penalty", c_float),
        ("logit_bias", POINTER(LogitBias)),
        ("n_logit_bias", c_size_t),
        ("grammar", c_char_p),
        ("grammar_root", c_char_p),
    ]


class GenerateResult(Structure):
    _fields_ = [
        ("n_prompt", c_int32),
        ("n_reused", c_int32),
        ("n_evaluated", c_int32),
        ("n_generated", c_int32),
        ("n_past", c_int32),
        ("stop_reason", c_int),
        ("prompt_ms", c_double),
        ("generate_ms", c_double),
    ]


class ModelInfo(Structure):
    _fields_ = [
        ("architecture", c_char_p),
        ("name", c_char_p),
        ("chat_template", c_char_p),
        ("backend", c_char_p),
        ("device", c_char_p),
        ("device_description", c_char_p),
        ("n_ctx", c_int32),
        ("n_ctx_train", c_int32),
        ("n_batch", c_int32),
        ("n_vocab", c_int32),
        ("n_embd", c_int32),
        ("n_layer", c_int32),
        ("n_gpu_layers", c_int32),
        ("n_params", c_uint64),
        ("size_bytes", c_uint64),
        ("bos", c_int32),
        ("eos", c_int32),
        ("eot", c_int32),
        ("add_bos", c_bool),
    ]


class DeviceInfo(Structure):
    _fields_ = [
        ("backend", c_char_p),
        ("name", c_char_p),
        ("description", c_char_p),
        ("vendor", c_char_p),
        ("is_gpu", c_bool),
        ("memory_total", c_uint64),
        ("memory_free", c_uint64),
    ]


class EmbedderParams(Structure):
    _fields_ = [
        ("pooling", c_int32),
        ("n_ctx", c_int32),
        ("n_batch", c_int32),
        ("n_seq_max", c_int32),
        ("normalize", c_bool),
    ]


class EmbedderInfo(Structure):
    _fields_ = [
        ("n_embd", c_int32),
        ("n_ctx", c_int32),
        ("pooling", c_int32),
        ("causal", c_bool),
    ]


PromptCallback = CFUNCTYPE(c_bool, c_int32, c_int32, c_void_p)
ResponseCallback = CFUNCTYPE(c_bool, c_int32, c_void_p, c_size_t, c_void_p)
LogCallback = CFUNCTYPE(None, c_int, c_char_p, c_void_p)

_status = c_int
_FUNCTIONS: List[tuple] = [
    # name, result type, argument types
    ("llmodel_version", c_char_p, []),
    ("llmodel_abi_version", c_int32, []),
    ("llmodel_last_error", c_char_p, []),
    ("llmodel_status_name", c_char_p, [c_int]),
    ("llmodel_set_log_callback", None, [LogCallback, c_void_p]),
    ("llmodel_backend_dir", c_char_p, []),
    ("llmodel_cpu_variant", c_char_p, []),
    ("llmodel_physical_cores", c_int32, []),
    ("llmodel_device_count", c_size_t, []),
    ("llmodel_device_get", _status, [c_size_t, POINTER(DeviceInfo)]),
    ("llmodel_load_default_params", LoadParams, []),
    ("llmodel_model_load", _status, [c_char_p, POINTER(LoadParams), POINTER(ModelPtr)]),
    ("llmodel_model_close", _status, [ModelPtr]),
    ("llmodel_model_free", None, [ModelPtr]),
    ("llmodel_model_get_info", _status, [ModelPtr, POINTER(ModelInfo)]),
    ("llmodel_model_meta", _status, [ModelPtr, c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("llmodel_token_is_eog", c_bool, [ModelPtr, c_int32]),
    ("llmodel_tokenize", _status,
     [ModelPtr, c_char_p, c_size_t, c_bool, c_bool, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
    ("llmodel_detokenize", _status,
     [ModelPtr, POINTER(c_int32), c_size_t, c_bool, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("llmodel_token_to_piece", _status, [ModelPtr, c_int32, c_bool, c_char_p, c_size_t, POINTER(c_size_t)]),
    ("llmodel_generate_default_params", GenerateParams, []),
    ("llmodel_grammar_check", _status, [ModelPtr, c_char_p, c_char_p]),
    ("llmodel_cancel", _status, [ModelPtr]),
    ("llmodel_generate", _status,
     [ModelPtr, c_char_p, c_size_t, POINTER(GenerateParams), PromptCallback, ResponseCallback, c_void_p,
      POINTER(GenerateResult)]),
    ("llmodel_generate_tokens", _status,
     [ModelPtr, POINTER(c_int32), c_size_t, POINTER(GenerateParams), PromptCallback, ResponseCallback, c_void_p,
      POINTER(GenerateResult)]),
    ("llmodel_stream_begin", _status,
     [ModelPtr, c_char_p, c_size_t, POINTER(GenerateParams), PromptCallback, c_void_p, POINTER(StreamPtr)]),
    ("llmodel_stream_begin_tokens", _status,
     [ModelPtr, POINTER(c_int32), c_size_t, POINTER(GenerateParams), PromptCallback, c_void_p, POINTER(StreamPtr)]),
    ("llmodel_stream_next", _status,
     [StreamPtr, POINTER(c_int32), POINTER(c_void_p), POINTER(c_size_t), POINTER(c_bool)]),
    ("llmodel_stream_end", _status, [StreamPtr, POINTER(GenerateResult)]),
    ("llmodel_conversation_new", _status, [ModelPtr, POINTER(ConversationPtr)]),
    ("llmodel_conversation_free", None, [ConversationPtr]),
    ("llmodel_conversation_cancel", _status, [ConversationPtr]),
    ("llmodel_conversation_generate", _status,
     [ConversationPtr, c_char_p, c_size_t, POINTER(GenerateParams), PromptCallback, ResponseCallback, c_void_p,
      POINTER(GenerateResult)]),
    ("llmodel_conversation_generate_tokens", _status,
     [ConversationPtr, POINTER(c_int32), c_size_t, POINTER(GenerateParams), PromptCallback, ResponseCallback,
      c_void_p, POINTER(GenerateResult)]),
    ("llmodel_conversation_stream_begin", _status,
     [ConversationPtr, c_char_p, c_size_t, POINTER(GenerateParams), PromptCallback, c_void_p, POINTER(StreamPtr)]),
    ("llmodel_conversation_stream_begin_tokens", _status,
     [ConversationPtr, POINTER(c_int32), c_size_t, POINTER(GenerateParams), PromptCallback, c_void_p,
      POINTER(StreamPtr)]),
    ("llmodel_conversation_reset", _status, [ConversationPtr]),
    ("llmodel_conversation_cached_tokens", _status,
     [ConversationPtr, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
    ("llmodel_conversation_state_size", _status, [ConversationPtr, POINTER(c_size_t)]),
    ("llmodel_conversation_state_save", _status, [ConversationPtr, c_void_p, c_size_t, POINTER(c_size_t)]),
    ("llmodel_conversation_state_load", _status, [ConversationPtr, c_void_p, c_size_t]),
    ("llmodel_embedder_default_params", EmbedderParams, []),
    ("llmodel_embedder_new", _status, [ModelPtr, POINTER(EmbedderParams), POINTER(EmbedderPtr)]),
    ("llmodel_embedder_free", None, [EmbedderPtr]),
    ("llmodel_embedder_get_info", _status, [EmbedderPtr, POINTER(EmbedderInfo)]),
    ("llmodel_embed_tokens", _status,
     [EmbedderPtr, POINTER(POINTER(c_int32)), POINTER(c_size_t), c_size_t, POINTER(c_float), c_size_t,
      PromptCallback, c_void_p]),
    ("llmodel_reset", _status, [ModelPtr]),
    ("llmodel_cached_tokens", _status, [ModelPtr, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
    ("llmodel_state_size", _status, [ModelPtr, POINTER(c_size_t)]),
    ("llmodel_state_save", _status, [ModelPtr, c_void_p, c_size_t, POINTER(c_size_t)]),
    ("llmodel_state_load", _status, [ModelPtr, c_void_p, c_size_t]),
    ("llmodel_set_threads", _status, [ModelPtr, c_int32]),
    ("llmodel_get_threads", c_int32, [ModelPtr]),
]

# llmodel_status values (llmodel.h) and the exceptions they become.
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_FILE_NOT_FOUND = 2
ERR_INVALID_FILE = 3
ERR_UNSUPPORTED = 4
ERR_OUT_OF_MEMORY = 5
ERR_CONTEXT_OVERFLOW = 6
ERR_BUSY = 7
ERR_CLOSED = 8
ERR_CANCELLED = 9
ERR_BUFFER_TOO_SMALL = 10
ERR_NO_DEVICE = 11
ERR_BACKEND = 12
ERR_INTERNAL = 13

_EXCEPTIONS = {
    ERR_INVALID_ARGUMENT: errors.InvalidArgumentError,
    ERR_FILE_NOT_FOUND: errors.ModelNotFoundError,
    ERR_INVALID_FILE: errors.InvalidModelError,
    ERR_UNSUPPORTED: errors.UnsupportedModelError,
    ERR_OUT_OF_MEMORY: errors.OutOfMemoryError,
    ERR_CONTEXT_OVERFLOW: errors.ContextOverflowError,
    ERR_BUSY: errors.ModelBusyError,
    ERR_CLOSED: errors.ModelClosedError,
    ERR_CANCELLED: errors.CancellationError,
    ERR_BUFFER_TOO_SMALL: errors.NativeError,  # callers that size buffers handle it before check()
    ERR_NO_DEVICE: errors.NoDeviceError,
    ERR_BACKEND: errors.BackendError,
    ERR_INTERNAL: errors.InternalError,
}


# ------------------------------------------------------------------ loading

def library_filename() -> str:
    if sys.platform == "win32":
        return "llmodel.dll"
    if sys.platform == "darwin":
        return "libllmodel.dylib"
    return "libllmodel.so"


def _candidates() -> List[Path]:
    name = library_filename()
    found: List[Path] = []
    env = os.environ.get(LIBRARY_ENV)
    if env:  # an explicit choice: look nowhere else
        p = Path(env)
        return [p / name if p.is_dir() or not p.suffix else p]
    here = Path(__file__).resolve().parent
    found.append(here / "lib" / name)  # inside an installed package
    found.append(here.parent.parent / "build" / "bin" / name)  # a source checkout built with CMake
    return found


_lib: Optional[ctypes.CDLL] = None
_lib_lock = threading.Lock()


_LOG_LEVELS = {LOG_DEBUG: logging.DEBUG, LOG_INFO: logging.INFO, LOG_WARN: logging.WARNING, LOG_ERROR: logging.ERROR}


def _on_log(level: int, text: Optional[bytes], _user_data: Any) -> None:
    # Called from native code: must never raise.
    try:
        py_level = _LOG_LEVELS.get(level, logging.DEBUG)
        if text and log.isEnabledFor(py_level):
            log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip("\n"))
    except Exception:  # noqa: BLE001 (at interpreter shutdown logging may be gone)
        pass


_log_callback = LogCallback(_on_log)  # referenced for the life of the process


def _open(path: Path) -> ctypes.CDLL:
    if sys.platform == "win32":
        os.add_dll_directory(str(path.parent))  # the ggml DLLs sit beside it
    from . import _cuda_runtime

    _cuda_runtime.preload(path.parent)  # before llmodel loads its backends
    lib = ctypes.CDLL(str(path))

    def symbol(name: str) -> Any:
        try:
            return getattr(lib, name)
        except AttributeError:
            raise errors.LibraryNotFoundError(
                f"{path} is not the llmodel library this package needs: it lacks {name}(); rebuild it") from None

    abi = symbol("llmodel_abi_version")
    abi.restype, abi.argtypes = c_int32, []
    if abi() != ABI_VERSION:
        raise errors.LibraryNotFoundError(
            f"{path} has ABI version {abi()}, but this gpt4all package needs {ABI_VERSION}; rebuild the library")
    for name, restype, argtypes in _FUNCTIONS:
        fn = symbol(name)
        fn.restype = restype
        fn.argtypes = argtypes
    lib.llmodel_set_log_callback(_log_callback, None)
    return lib


def lib() -> ctypes.CDLL:
    """The opened library (opened on the first call)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            tried = []
            for path in _candidates():
                if not path.is_file():
                    tried.append(f"{path} (not found)")
                    continue
                try:
                    _lib = _open(path)
                    break
                except OSError as e:
                    tried.append(f"{path} ({e})")
            else:
                raise errors.LibraryNotFoundError(
                    "could not find the llmodel native library. Looked in:\n  " + "\n  ".join(tried)
                    + f"\nInstall gpt4all with pip, build it with `pip install .` from a source checkout, or set "
                    f"{LIBRARY_ENV} to a library built with CMake (cmake -B build && cmake --build build).")
    return _lib


def last_error() -> str:
    return lib().llmodel_last_error().decode("utf-8", "replace")


def check(status: int, what: str = "") -> None:
    """Raises the exception for a failed status, with the native message."""
    if status == OK:
        return
    message = last_error() or lib().llmodel_status_name(status).decode()
    if what:
        message = f"{what}: {message}"
    raise _EXCEPTIONS.get(status, errors.NativeError)(message)


def decode(b: Optional[bytes]) -> str:
    return b.decode("utf-8", "replace") if b else ""
