"""Finding a pip to run, wherever this code runs.

pip is not always importable by the running interpreter: inside pip's own
isolated build environment (``pip install .`` building this package), in a
venv made ``--without-pip`` or by uv. This module imports nothing of the
package, so build scripts load it by path as well.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import List, Optional


def _bundled_pip_wheel() -> Optional[Path]:
    """pip's wheel as shipped for ensurepip (CPython's, or Debian's python-wheels)."""
    places = []
    spec = importlib.util.find_spec("ensurepip")
    if spec is not None and spec.origin:
        places.append(Path(spec.origin).parent / "_bundled")
    places.append(Path("/usr/share/python-wheels"))
    for place in places:
        wheels = sorted(place.glob("pip-*.whl"))
        if wheels:
            return wheels[-1]
    return None


def pip_command() -> List[str]:
    """The command that runs pip: this interpreter's pip module, else pip run
    from its bundled wheel (pip supports ``python pip.whl/pip``), else a pip
    on PATH.

    Raises:
        FileNotFoundError: no pip anywhere.
    """
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    wheel = _bundled_pip_wheel()
    if wheel is not None:
        return [sys.executable, str(wheel / "pip")]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise FileNotFoundError(f"pip is not available to {sys.executable} (no pip module, no bundled pip wheel, "
                            f"no pip on PATH): install pip")
