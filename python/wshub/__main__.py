"""``python -m wshub ARGS…`` runs the bundled hub with those arguments."""

from __future__ import annotations

import os
import subprocess
import sys

from ._binary import bin_path


def main() -> None:
    """Replaces this process with the hub (POSIX), so signals, stdin and the
    exit status are the hub's own; elsewhere runs it and exits with its status."""
    try:
        binary = bin_path()
    except FileNotFoundError as e:
        sys.exit(f"wshub: {e}")
    args = [binary, *sys.argv[1:]]
    if os.name == "posix":
        os.execv(binary, args)
    sys.exit(subprocess.call(args))


if __name__ == "__main__":
    main()
