"""The core's logs arrive in Python's `logging`, under the `remote_access` logger, at the levels
Python sets: a real `ssh` client with the wrong key is refused by a real gateway, and the
refusal's reason is a `logging` record."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import subprocess
import time

import pytest

import remote_access as ra
from conftest import Sshd
from test_gateway import Kit, issue, serving

REFUSAL_LOGGER = "remote_access.gateway.ssh.handler"


async def login_with(kit: Kit, key: pathlib.Path, username: str) -> int:
    """Logs in to the gateway as `username` with `key`, as the real ssh client does."""
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-F", "/dev/null", "-i", str(key), "-p", str(kit.running.port),
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"{username}@127.0.0.1", "true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 60)


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REFUSAL_LOGGER and "authentication refused" in r.getMessage()]


async def wait_for_refusal(caplog: pytest.LogCaptureFixture, timeout: float = 10) -> logging.LogRecord:
    """Records reach `logging` from the package's log thread, a moment after they are made."""
    deadline = time.monotonic() + timeout
    while not (found := refusals(caplog)):
        assert time.monotonic() < deadline, [(r.name, r.getMessage()) for r in caplog.records]
        await asyncio.sleep(0.05)
    return found[0]


def test_a_refused_logins_reason_is_a_logging_record(
    sshd: Sshd, caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    wrong_key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)

    package = logging.getLogger("remote_access")
    level = package.level
    caplog.handler.setLevel(logging.DEBUG)

    async def main() -> None:
        async with serving() as kit:
            credentials, _ = await issue(kit, "py-logs", sshd.builder())

            # Python's level is honoured: at WARNING, the refusal (INFO) is not recorded.
            package.setLevel(logging.WARNING)
            ra.reset_log_cache()
            assert await login_with(kit, wrong_key, credentials.username) == 255
            await asyncio.sleep(1)
            assert refusals(caplog) == []

            # At DEBUG it is, once the cached levels are reset (the documented step after a
            # level changes), with the reason and the username, and never a key.
            package.setLevel(logging.DEBUG)
            ra.reset_log_cache()
            assert await login_with(kit, wrong_key, credentials.username) == 255
            record = await wait_for_refusal(caplog)
            assert record.levelno == logging.INFO
            message = record.getMessage()
            assert "key does not belong to this user" in message, message
            assert credentials.username in message, message
            assert "PRIVATE KEY" not in caplog.text
            # Every record of the extension is under `remote_access`: the core's by module,
            # the libraries inside the extension (russh) under `remote_access.deps`.
            names = {r.name for r in caplog.records if r.name != "asyncio"}
            assert all(name == "remote_access" or name.startswith("remote_access.") for name in names), names
            assert any(name.startswith("remote_access.deps.russh") for name in names), names

    try:
        asyncio.run(main())
    finally:
        # Back to the level the other tests run at, and forget the levels cached meanwhile.
        package.setLevel(level)
        ra.reset_log_cache()
