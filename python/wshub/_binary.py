"""Where the ``wshub`` binary that came with this package is."""

from __future__ import annotations

import os
import sys
import sysconfig

_NAME = "wshub.exe" if sys.platform == "win32" else "wshub"


def _candidates() -> list[str]:
    """Script directories the wheel may have put the binary in, most likely first."""
    dirs: list[str] = []
    # The installing scheme: a virtualenv's or the system's `bin`.
    dirs.append(sysconfig.get_path("scripts"))
    # `pip install --user`.
    preferred = getattr(sysconfig, "get_preferred_scheme", None)  # Python 3.10+
    user_scheme = preferred("user") if preferred else f"{os.name}_user"
    try:
        dirs.append(sysconfig.get_path("scripts", scheme=user_scheme))
    except KeyError:
        pass  # no user scheme on this interpreter
    # The interpreter's own directory (a virtualenv run without activation).
    dirs.append(os.path.dirname(sys.executable))
    # `pip install --target DIR`: the package is DIR/wshub, the binary DIR/bin.
    package_dir = os.path.dirname(os.path.abspath(__file__))
    dirs.append(os.path.join(os.path.dirname(package_dir), "bin"))
    seen: list[str] = []
    for d in dirs:
        if d and d not in seen:
            seen.append(d)
    return [os.path.join(d, _NAME) for d in seen]


def bin_path() -> str:
    """The path of the ``wshub`` binary installed with this package.

    Raises ``FileNotFoundError`` naming the places looked in when there is
    none (for instance when the package was copied rather than installed).

    >>> import subprocess, wshub
    >>> subprocess.run([wshub.bin_path(), "--version"], check=True)  # doctest: +SKIP
    """
    candidates = _candidates()
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "the wshub binary is not installed beside this package; looked for " + ", ".join(candidates)
    )
