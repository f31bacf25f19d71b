"""The package version: the one place it is written (CMake and setup read it).

It continues the original gpt4all package's numbering, whose API this package
keeps: 2.9.0 follows the original's last release, 2.8.2, so that programs and
plugins that ask for ``gpt4all>=2.5`` are satisfied by this package instead of
replacing it with the original.
"""

__version__ = "2.9.0"
