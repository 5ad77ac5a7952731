"""Real peers for the Python tests: an OpenSSH sshd playing the builder, TigerVNC playing the
builder's screen. Each test starts its own and stops it by PID."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO
from dataclasses import dataclass

import pytest

import remote_access as ra


_next_port = 0


def free_port() -> int:
    """A free loopback port for a server this test starts, and no other test's: outside the
    kernel's ephemeral range (no outgoing connection can hold it by the time the server binds),
    and claimed with a file naming this process under $TMPDIR/remote-access-test-ports, as the
    Rust and Node tests do, so that no other test process is given it while this one lives."""
    global _next_port
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(n) for n in f.read().split())
    candidates = [p for p in range(10000, 65536) if p < low or p > high]
    claims = pathlib.Path(tempfile.gettempdir(), "remote-access-test-ports")
    claims.mkdir(exist_ok=True)
    start = os.getpid() * 7919
    for _ in candidates:
        _next_port += 1
        port = candidates[(start + _next_port) % len(candidates)]
        if _claim(claims / str(port)) and _bindable(port):
            return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


def _claim(file: pathlib.Path) -> bool:
    """Claims a port by creating `file` with this PID in it; clears (without claiming) a claim
    whose process has gone."""
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        owner = file.read_text().strip() if file.exists() else ""
        # An empty file is a claim being written: it is some live process's.
        if owner and owner != str(os.getpid()) and not pathlib.Path("/proc", owner).exists():
            file.unlink(missing_ok=True)
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listens_on(pgid: int, port: int) -> bool:
    """Whether a process of group `pgid` holds a listening IPv4 TCP socket on `port`. A successful
    connect proves less: when another program took the port between `free_port()` and the
    server's bind, it answers in our server's place. The group counts, not only its leader,
    because a server's helpers (Xtigervnc's xkbcomp) inherit its sockets."""
    # Rows of /proc/net/tcp: "sl local_address rem_address st ... inode", where local_address
    # is HEXADDR:HEXPORT and st 0A is LISTEN.
    suffix = f":{port:04X}"
    with open("/proc/net/tcp") as table:
        sockets = {
            f"socket:[{f[9]}]"
            for f in (row.split() for row in list(table)[1:])
            if len(f) > 9 and f[1].endswith(suffix) and f[3] == "0A"
        }
    if not sockets:
        return False
    for pid in group_pids(pgid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # exited meanwhile
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                    return True
            except OSError:
                pass  # closed meanwhile
    return False


def group_pids(pgid: int) -> list[int]:
    """The processes of group `pgid` (field 5 of /proc/<pid>/stat, after the parenthesised name,
    which may itself hold spaces and parentheses)."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) > 2 and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Waits until `proc` (or its process group) itself listens on the IPv4 `port`; False when it
    exits first (these servers all exit when they cannot bind) or takes longer than 20 s (a busy
    machine is slow, but they bind within 0.1 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if listens_on(proc.pid, port):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def listening(
    argv_for: Callable[[int], list[str]], what: str, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> tuple[int, subprocess.Popen[bytes]]:
    """Starts `argv_for(port)` on a free port until it listens there itself; on another port when
    it does not (a few tries), because another program may take the port between choosing and
    binding it. Returns the port and the process, which leads its own process group: `stop`
    ends the whole group, helpers included."""
    for _attempt in range(5):
        port = free_port()
        proc = subprocess.Popen(
            argv_for(port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, process_group=0
        )
        if wait_listening(port, proc):
            return port, proc
        stop(proc)
    raise RuntimeError(f"{what} did not start (last try: exit status {proc.returncode})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group, then SIGKILL after 5 s: Xtigervnc's xkbcomp child inherits
    the listening socket and would keep the port otherwise."""

    def signal_group(sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # the group is gone already

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
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
        # `-displayfd` makes it pick a free display itself, taking the display's lock file
        # atomically, so no other X server can race it to a number chosen here; only its RFB port
        # matters, so the number it writes to fd 1 goes nowhere.
        port, proc = listening(
            lambda port: [
                "Xtigervnc", "-displayfd", "1", "-geometry", "800x600", "-depth", "24",
                "-rfbport", str(port), "-localhost=1", "-SecurityTypes", "VncAuth",
                "-PasswordFile", str(d / "passwd"), "-nolisten", "tcp",
            ],
            "Xtigervnc",
        )
        try:
            yield VncServer(port, password, 800, 600)
        finally:
            stop(proc)


async def next_event(events: ra.Subscription, kind: ra.EventKind, timeout: float = 60) -> ra.Event:
    """The next event of `kind`, skipping others."""

    async def wait() -> ra.Event:
        async for event in events:
            if event.kind == kind:
                return event
        raise AssertionError(f"the subscription ended before a {kind!r} event")

    return await asyncio.wait_for(wait(), timeout)
