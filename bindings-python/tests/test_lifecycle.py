"""A started gateway lives as asyncio's servers do: it serves until stopped or the process
ends, whether or not its handle is kept; `async with gateway.start(...)` stops it on leaving
the block, and `await gateway.start(...)` returns a handle to stop it with."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

import remote_access as ra
from conftest import free_port


async def banner(port: int) -> bytes:
    """The SSH identification line the gateway sends first."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


# Starts a gateway, drops every reference to it and collects garbage, then prints its port
# and waits to be killed.
DROPPED = """
import asyncio
import gc

import remote_access as ra


async def main() -> None:
    gateway = ra.Gateway(ra.Authority())
    port = (await gateway.start("127.0.0.1:0")).port
    del gateway
    gc.collect()
    await asyncio.sleep(0.5)  # what a stop on drop would need to close the listener
    print(port, flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
"""


def test_a_gateway_whose_handle_is_dropped_serves_until_the_process_ends() -> None:
    service = subprocess.Popen([sys.executable, "-c", DROPPED], stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        port = int(service.stdout.readline())
        assert asyncio.run(banner(port)).startswith(b"SSH-2.0-")
    finally:
        service.kill()
        service.wait()
    assert refused(port)


def test_async_with_gateway_start_serves_inside_the_block_only() -> None:
    async def main() -> None:
        gateway = ra.Gateway(ra.Authority())
        starting = gateway.start("127.0.0.1:0")
        assert isinstance(starting, ra.GatewayStart)
        async with starting as running:
            assert isinstance(running, ra.RunningGateway) and running.serving
            assert (await banner(running.port)).startswith(b"SSH-2.0-")
        assert not running.serving and refused(running.port)

        # Like a coroutine, a start runs once.
        with pytest.raises(RuntimeError, match="already awaited or entered"):
            await starting

        # Leaving the block by an exception stops the gateway too.
        with pytest.raises(LookupError):
            async with gateway.start("127.0.0.1:0") as running:
                raise LookupError
        assert not running.serving and refused(running.port)

        # A start that is never awaited or entered binds nothing.
        port = free_port()
        gateway.start(f"127.0.0.1:{port}")
        await asyncio.sleep(0.2)
        assert refused(port)

    asyncio.run(main())


def test_await_gateway_start_returns_a_handle_that_stops_it() -> None:
    async def main() -> None:
        gateway = ra.Gateway(ra.Authority())
        running = await gateway.start("127.0.0.1:0")
        assert running.serving and (await banner(running.port)).startswith(b"SSH-2.0-")
        await running.stop()
        assert not running.serving and refused(running.port)

        # The handle is an async context manager as well (as asyncio's Server is).
        async with await gateway.start("127.0.0.1:0") as running:
            assert running.serving
        assert not running.serving and refused(running.port)

    asyncio.run(main())
