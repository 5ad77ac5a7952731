"""The example in docs/python.md runs as written: against a real sshd, the script it writes
gets a shell on the builder, and logging out after the steps makes it print finish_build."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time

from conftest import Sshd

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "python.md"


def example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/python.md has no python example"
    return str(blocks[0])


def test_the_documented_ci_service_runs(sshd: Sshd, tmp_path: pathlib.Path) -> None:
    program = tmp_path / "ci_service.py"
    program.write_text(example_source())
    script = tmp_path / "build.sh"
    service = subprocess.Popen(
        [
            sys.executable, str(program),
            "--builder", f"127.0.0.1:{sshd.port}",
            "--authorized-keys", str(sshd.dir / "authorized_keys"),
            "--script", str(script),
            "--steps-seconds", "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert service.stdout is not None
        info = json.loads(service.stdout.readline())
        assert info["build_id"] == "build-1234" and info["builder_port"] == sshd.port
        assert "PRIVATE KEY" not in json.dumps(info)
        # The service prints each event; wait until the build's steps have completed.
        deadline = time.monotonic() + 30
        while not (line := service.stdout.readline()).startswith("steps_completed:"):
            assert line and time.monotonic() < deadline, "the service stopped before the steps completed"
        assert oct(script.stat().st_mode & 0o777) == "0o600"  # written before the steps started
        shell = subprocess.run(
            ["sh", str(script), "printenv", "FCI_BUILD_DIR"], capture_output=True, text=True, timeout=60
        )
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.strip() == str(sshd.build_dir)
        rest, err = service.communicate(timeout=60)
        assert service.returncode == 0, err
        lines = rest.splitlines()
        assert any(line.startswith("logged_out:") for line in lines), rest
        assert lines[-1].startswith("finish_build:"), rest
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def test_the_documented_ci_service_type_checks(tmp_path: pathlib.Path) -> None:
    program = tmp_path / "ci_service.py"
    program.write_text(example_source())
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
