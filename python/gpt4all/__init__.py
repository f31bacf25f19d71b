"""Run large language models locally: ``from gpt4all import GPT4All``.

Importing this package is cheap: the native library opens the first time a
model is loaded or a device is listed.
"""
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (BackendError, CancellationError, ChatTemplateError, ContextOverflowError, GPT4AllError,
                     InternalError, InvalidArgumentError, InvalidModelError, LibraryNotFoundError, ModelBusyError,
                     ModelClosedError, ModelNotFoundError, NativeError, NoDeviceError, OutOfMemoryError,
                     UnsupportedModelError)
from .gpt4all import GPT4All

if TYPE_CHECKING:
    from .embeddings import Embed4All
    from .errors import DownloadError

__all__ = [
    "GPT4All", "Embed4All", "__version__", "GPT4AllError", "InvalidArgumentError", "ModelNotFoundError", "InvalidModelError",
    "UnsupportedModelError", "ContextOverflowError", "NoDeviceError", "ModelClosedError", "NativeError",
    "ModelBusyError", "OutOfMemoryError", "BackendError", "InternalError", "LibraryNotFoundError", "DownloadError",
    "CancellationError", "ChatTemplateError",
]


def __getattr__(name: str) -> Any:
    if name == "Embed4All":  # imported on first use: import gpt4all stays cheap
        from .embeddings import Embed4All

        return Embed4All
    if name == "DownloadError":  # made on first use: it imports requests
        from . import errors

        return errors.DownloadError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
