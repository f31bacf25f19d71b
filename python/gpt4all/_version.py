"""The package version: the one place it is written (CMake and setup read it)."""

__version__ = "0.1.0"
