"""``python -m remote_access`` and the ``remote-access`` script pip installs: the command line,
run as a user's shell would."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys


def run(args: list[str], *, script: bool = False) -> subprocess.CompletedProcess[str]:
    """The command line with ``args``, without a Redis URL in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "REMOTE_ACCESS_REDIS_URL"}
    if script:
        command = [str(pathlib.Path(sys.executable).parent / "remote-access"), *args]
    else:
        command = [sys.executable, "-m", "remote_access", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_help_lists_the_commands_and_each_takes_help() -> None:
    for script in (False, True):
        listed = run(["--help"], script=script)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith("remote-access: temporary SSH and VNC access")
        for name in ("gateway", "issue", "script", "status", "revoke"):
            assert f"\n  {name} " in listed.stdout
            one = run([name, "--help"], script=script)
            assert one.returncode == 0, one.stderr
            assert one.stdout.startswith(f"usage: remote-access {name}")


def test_a_usage_error_exits_2_and_says_what_is_wrong() -> None:
    missing = run(["status", "b-1"])
    assert missing.returncode == 2
    assert "REMOTE_ACCESS_REDIS_URL" in missing.stderr
    unknown = run(["frobnicate"])
    assert unknown.returncode == 2
    assert 'unknown command "frobnicate"' in unknown.stderr
