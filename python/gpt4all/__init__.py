"""Run large language models locally: ``from gpt4all import GPT4All``.

Importing this package is cheap: the native library opens the first time a
model is loaded or a device is listed.
"""
from ._version import __version__
from .errors import (ChatTemplateError, ContextOverflowError, DownloadError, GPT4AllError, InvalidArgumentError,
                     InvalidModelError, LibraryNotFoundError, ModelBusyError, ModelClosedError, ModelNotFoundError,
                     NativeError, NoDeviceError, OutOfMemoryError, UnsupportedModelError)
from .gpt4all import GPT4All

__all__ = [
    "GPT4All", "__version__", "GPT4AllError", "InvalidArgumentError", "ModelNotFoundError", "InvalidModelError",
    "UnsupportedModelError", "ContextOverflowError", "NoDeviceError", "ModelClosedError", "NativeError",
    "ModelBusyError", "OutOfMemoryError", "LibraryNotFoundError", "DownloadError", "ChatTemplateError",
]
