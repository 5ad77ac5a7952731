"""Real peers for the Python tests: an OpenSSH sshd playing the builder, TigerVNC playing the
builder's screen. Each test starts its own and stops it by PID."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO
from dataclasses import dataclass

import pytest

import remote_access as ra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port}")


def listening(
    argv_for: Callable[[int], list[str]], what: str, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> tuple[int, subprocess.Popen[bytes]]:
    """Starts `argv_for(port)` on a free port until it listens (another program may take the
    port between choosing and binding it); returns the port and the process."""
    for _attempt in range(5):
        port = free_port()
        proc = subprocess.Popen(argv_for(port), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for_port(port, proc, what)
            return port, proc
        except RuntimeError:
            stop(proc)
    raise RuntimeError(f"{what} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Sshd:
    """A real sshd on a loopback port: the build's machine."""

    dir: pathlib.Path
    port: int
    host_key: str
    build_dir: pathlib.Path
    proc: subprocess.Popen[bytes]

    def authorize(self, line: str) -> None:
        with open(self.dir / "authorized_keys", "a") as f:
            f.write(line + "\n")

    def builder(self, **kwargs: object) -> ra.Builder:
        return ra.Builder(
            "127.0.0.1", ssh_port=self.port, user="root", host_key=self.host_key, **kwargs  # type: ignore[arg-type]
        )


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    with tempfile.TemporaryDirectory(prefix="ra-py-sshd-") as tmp:
        d = pathlib.Path(tmp)
        os.makedirs("/run/sshd", exist_ok=True)
        build_dir = d / "build dir"
        build_dir.mkdir()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True
        )
        (d / "authorized_keys").write_text("")
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
            f'AllowTcpForwarding yes\nSetEnv "FCI_BUILD_DIR={build_dir}"\n'
        )
        host_key = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
        with open(d / "sshd.log", "wb") as log:
            try:
                port, proc = listening(
                    lambda port: ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                    "sshd",
                    stderr=log,
                )
            except RuntimeError as err:
                raise RuntimeError(f"{err}: " + (d / "sshd.log").read_text()) from None
            try:
                yield Sshd(d, port, host_key, build_dir, proc)
            finally:
                stop(proc)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, in-memory only; yields its URL."""
    port, proc = listening(
        lambda port: ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        "redis-server",
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@dataclass
class VncServer:
    """TigerVNC's Xtigervnc with its own password (the builder's, which users never see)."""

    port: int
    password: str
    width: int
    height: int


@pytest.fixture
def tigervnc() -> Iterator[VncServer]:
    with tempfile.TemporaryDirectory(prefix="ra-py-vnc-") as tmp:
        d = pathlib.Path(tmp)
        password = "builder9"
        (d / "passwd").write_bytes(ra.vnc_password_file(password))
        # The display number follows the port, so a retry on another port gets another display.
        port, proc = listening(
            lambda port: [
                "Xtigervnc", f":{300 + port % 2000}", "-geometry", "800x600", "-depth", "24",
                "-rfbport", str(port), "-localhost=1", "-SecurityTypes", "VncAuth",
                "-PasswordFile", str(d / "passwd"), "-nolisten", "tcp",
            ],
            "Xtigervnc",
        )
        try:
            yield VncServer(port, password, 800, 600)
        finally:
            stop(proc)


async def next_event(events: ra.Subscription, kind: str, timeout: float = 60) -> ra.Event:
    """The next event of `kind`, skipping others."""

    async def wait() -> ra.Event:
        async for event in events:
            if event.kind == kind:
                return event
        raise AssertionError(f"the subscription ended before a {kind!r} event")

    return await asyncio.wait_for(wait(), timeout)
