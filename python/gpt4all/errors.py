"""Exceptions raised by gpt4all.

Each one also subclasses the built-in exception that code written for the
original package already catches: a missing model is a ``FileNotFoundError``,
a bad argument a ``ValueError``, a failure inside the engine a
``RuntimeError``, a failed download both the built-in ``ConnectionError``
and ``requests.exceptions.ConnectionError``. All of them are ``GPT4AllError``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any


class GPT4AllError(Exception):
    """Base class of every error raised by gpt4all."""


class InvalidArgumentError(GPT4AllError, ValueError):
    """A parameter value that makes no sense (negative ``top_k``, ...)."""


class GrammarError(InvalidArgumentError):
    """A grammar or JSON schema that cannot constrain generation; the message
    says where (a line and column, or a JSON pointer into the schema) and why."""


class ChatTemplateError(GPT4AllError, ValueError):
    """A chat template that cannot be used: invalid Jinja, an error while it
    renders (an undefined name, ``raise_exception()``...), a limit of the
    sandbox exceeded, or a conversation it cannot keep message text apart in."""


class ModelNotFoundError(GPT4AllError, FileNotFoundError):
    """The model file does not exist (or is not known and cannot be fetched)."""


class InvalidModelError(GPT4AllError, ValueError):
    """The file is not a usable model: empty, not GGUF, truncated, corrupt."""


class UnsupportedModelError(InvalidModelError):
    """A valid GGUF file whose architecture the engine cannot run."""


class ContextOverflowError(GPT4AllError, ValueError):
    """The prompt does not fit in the model's context window (``n_ctx``)."""


class NoDeviceError(GPT4AllError, ValueError):
    """The requested GPU device does not exist on this machine."""


class ModelClosedError(GPT4AllError, ValueError):
    """The model was closed; load it again to use it."""


class NativeError(GPT4AllError, RuntimeError):
    """The native library reported a failure."""


class ModelBusyError(NativeError):
    """A call was made on a model that is inside another call on the same thread."""


class CancellationError(NativeError):
    """A call was cancelled (Ctrl-C, ``cancel()``, a progress callback
    returning False) before it finished."""


class OutOfMemoryError(NativeError, MemoryError):
    """The weights or the context could not be allocated."""


class DeviceMemoryError(OutOfMemoryError, NoDeviceError):
    """The chosen GPU has less free memory than the model needs; the message
    names both figures. Raised before loading, so nothing was allocated.
    Also a ``NoDeviceError`` (a ``ValueError``), which is what the original
    package raised when no GPU had room for the model."""


class BackendError(NativeError):
    """The engine (llama.cpp/ggml) failed while computing: a failed step of
    the compute backend, such as a GPU error."""


class InternalError(NativeError):
    """The native library reached a state it should never reach: a bug in
    gpt4all. Please report it, with the message."""


class LibraryNotFoundError(GPT4AllError, OSError):
    """The native llmodel library could not be found or opened."""


if TYPE_CHECKING:
    from requests.exceptions import ConnectionError as _RequestsConnectionError

    class DownloadError(GPT4AllError, _RequestsConnectionError, ConnectionError):
        """A model could not be downloaded."""


def _make_download_error() -> type:
    # Built on first use: subclassing requests' ConnectionError means
    # importing requests, which `import gpt4all` must not pay for.
    from requests.exceptions import ConnectionError as RequestsConnectionError

    class DownloadError(GPT4AllError, RequestsConnectionError, ConnectionError):
        """A model could not be downloaded.

        Catchable as the built-in ``ConnectionError`` and as
        ``requests.exceptions.ConnectionError``, which code written for the
        original package catches around downloads.
        """

    DownloadError.__module__ = __name__
    DownloadError.__qualname__ = "DownloadError"  # pickles by name
    return DownloadError


def __getattr__(name: str) -> Any:
    if name == "DownloadError":
        # setdefault: two threads racing here still share one class
        return globals().setdefault("DownloadError", _make_download_error())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
