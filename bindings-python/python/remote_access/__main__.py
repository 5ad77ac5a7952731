"""``python -m remote_access``: the ``remote-access`` command line (``--help`` lists the
commands), the same as ``cargo install remote-access-cli`` gives."""

from __future__ import annotations

import sys

from remote_access._native import cli_main


def main() -> int:
    """Runs the command line with this process's arguments; returns the exit code."""
    sys.stdout.flush()
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
