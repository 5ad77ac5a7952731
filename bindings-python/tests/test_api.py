"""The Python API without a network peer: every core error's exception class, secrets kept out
of repr/str/errors/pickles, durations, cancellation, the fork guard and interpreter exit."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import pickle
import socket
import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pytest

import remote_access as ra
from conftest import free_port, next_event

START = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
# A build someone started by hand, with remote access: what every issue() must state.
MANUAL: dict[str, Any] = {"trigger": "manual", "remote_access_enabled": True}


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_the_exception_classes_all_derive_from_one_base() -> None:
    for name in [
        "NotManuallyTriggeredError", "RemoteAccessDisabledError", "InvalidInputError",
        "BuildExistsError", "UnknownBuildError", "SessionEndedError", "AccessDeniedError",
        "StoreUnavailableError", "NoCapacityError", "HostKeyMismatchError", "KeyMaterialError",
    ]:
        assert issubclass(getattr(ra, name), ra.RemoteAccessError), name
    assert issubclass(ra.RemoteAccessError, Exception)


def test_each_core_error_raises_its_class() -> None:
    async def main() -> None:
        authority = ra.Authority(vnc_ports=[free_port()])
        with pytest.raises(ra.NotManuallyTriggeredError) as e1:
            await authority.issue("b-webhook", trigger="webhook", remote_access_enabled=True)
        assert e1.value.code == "not_manually_triggered" and e1.value.build_id == "b-webhook"

        with pytest.raises(ra.RemoteAccessDisabledError) as e2:
            await authority.issue("b-off", trigger="manual", remote_access_enabled=False)
        assert e2.value.code == "remote_access_disabled"

        with pytest.raises(ra.InvalidInputError) as e3:
            await authority.issue("no spaces allowed", **MANUAL)
        assert e3.value.code == "invalid_input" and e3.value.what == "build id"
        with pytest.raises(ra.InvalidInputError):
            # A type checker refuses it too (tests/test_types.py); at run time the core does.
            await authority.issue("b-trigger", trigger="sometimes", remote_access_enabled=True)  # type: ignore[arg-type]
        with pytest.raises(ra.InvalidInputError):
            ra.Builder("builder.example.com")
        with pytest.raises(ra.InvalidInputError):
            ra.Policy(grace=-5)
        with pytest.raises(TypeError):
            ra.Policy(grace="20 minutes")  # type: ignore[arg-type]

        await authority.issue("b-1", **MANUAL)
        with pytest.raises(ra.BuildExistsError) as e4:
            await authority.issue("b-1", **MANUAL)
        assert e4.value.build_id == "b-1"

        with pytest.raises(ra.UnknownBuildError) as e5:
            await authority.session("b-nope")
        assert e5.value.code == "unknown_build"

        await authority.revoke("b-1", "test")
        with pytest.raises(ra.SessionEndedError) as e6:
            await authority.connected("b-1", "ssh")
        assert "test" in e6.value.reason and e6.value.end_reason_code == "revoked"

        with pytest.raises(ra.AccessDeniedError) as e7:
            await authority.verify_ssh("ra-nobody", ra.HostKey.generate().public_key)
        assert e7.value.reason == "unknown_user"

        # One VNC port: a second live VNC build has none left.
        vnc = ra.Builder("127.0.0.1", vnc_port=5900)
        await authority.issue("b-vnc-1", **MANUAL, builder=vnc, builder_vnc_password="pw")
        with pytest.raises(ra.NoCapacityError) as e8:
            await authority.issue("b-vnc-2", **MANUAL, builder=vnc, builder_vnc_password="pw")
        assert e8.value.code == "no_capacity"

        with pytest.raises(ra.InvalidInputError) as e3b:
            ra.HostKey.from_openssh("not a key")
        assert e3b.value.what == "host key"

        # An agent pinned to another key than the gateway's: refused, never retried.
        agent_build = await authority.issue("b-agent", **MANUAL, builder=ra.Builder("127.0.0.1", reverse_tunnel=True))
        gateway = ra.Gateway(authority)
        async with gateway.start("127.0.0.1:0") as running:
            with pytest.raises(ra.HostKeyMismatchError) as e9:
                agent = ra.run_agent(
                    f"127.0.0.1:{running.port}",
                    ra.HostKey.generate().public_key,
                    agent_build.agent_username or "",
                    agent_build.agent_private_key_openssh() or "",
                )
                await asyncio.wait_for(agent, 60)
            assert e9.value.code == "host_key_mismatch"

            # Network errors are OSError with the system's errno (here: the address is taken).
            with pytest.raises(OSError) as e10:
                await gateway.start(f"127.0.0.1:{running.port}")
            assert e10.value.errno == errno.EADDRINUSE

    run(main())


def test_errors_that_cannot_be_caused_from_python_map_to_their_classes() -> None:
    # The in-memory store cannot fail, compare-and-swap gives up only under heavy contention, no
    # task panics and key generation does not fail on a working machine: the mapping is checked
    # on core errors built for the test.
    classes: dict[str, type[ra.RemoteAccessError]] = {
        "store_unavailable": ra.StoreUnavailableError,
        "contention": ra.ContentionError,
        "internal": ra.InternalError,
        "key_material": ra.KeyMaterialError,
    }
    for code, cls in classes.items():
        err = ra._native._error_for_test(code)
        assert isinstance(err, cls) and isinstance(err, ra.RemoteAccessError) and err.code == code
    assert isinstance(ra._native._error_for_test("io"), OSError)


def test_secrets_stay_out_of_repr_str_errors_and_pickles() -> None:
    async def main() -> None:
        authority = ra.Authority(vnc_ports=[free_port(), free_port()])
        events = authority.subscribe()
        credentials = await authority.issue(
            "b-secret",
            **MANUAL,
            builder=ra.Builder("127.0.0.1", vnc_port=5900, reverse_tunnel=True),
            builder_vnc_password="builderpw",
        )
        # Without a supplied one, the builder's VNC password is generated for the build.
        generated = await authority.issue("b-secret-gen", **MANUAL, builder=ra.Builder("127.0.0.1", vnc_port=5900))
        builder_password = generated.builder_vnc_password()
        assert builder_password is not None and len(builder_password) == 8 and builder_password.isalnum()
        assert credentials.builder_vnc_password() == "builderpw"
        key = credentials.private_key_openssh()
        agent_key = credentials.agent_private_key_openssh()
        password = credentials.vnc_password()
        assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert agent_key is not None and agent_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert len(password) == 8

        host_key = ra.HostKey.generate()
        session = await authority.session("b-secret")
        info = ra.ConnectionInfo(credentials, session, host_key, ra.ScriptOptions("gw.example", 2222))
        texts = [repr(credentials), str(credentials), repr(host_key), repr(session), json.dumps(info),
                 repr(info), repr(authority), repr(generated), str(generated)]
        with pytest.raises(ra.AccessDeniedError) as denied:
            await authority.verify_vnc("b-secret", password[::-1] + "x")
        texts.append(str(denied.value))
        texts.append(repr(denied.value))
        while (event := events.try_next()) is not None:
            texts += [repr(event), str(event), json.dumps(event.to_dict())]
        for secret in [key, agent_key, password, "builderpw", builder_password, host_key.to_openssh()]:
            body = secret.strip().splitlines()[1] if "\n" in secret.strip() else secret
            for text in texts:
                assert body not in text
        for value in [credentials, host_key]:
            with pytest.raises(TypeError):
                pickle.dumps(value)
        # The connection info has no secret, so it pickles, as a plain dict.
        assert pickle.loads(pickle.dumps(info)) == dict(info)
        # The explicit calls are the way to the secrets.
        assert "BEGIN OPENSSH PRIVATE KEY" in info.posix_script(credentials)
        instructions = info.vnc_instructions(credentials)
        assert instructions is not None and password in instructions

    run(main())


def test_connection_info_is_a_json_ready_dict_with_the_core_keys() -> None:
    async def main() -> None:
        authority = ra.Authority()
        credentials = await authority.issue("b-info", **MANUAL, builder=ra.Builder("10.0.3.7", ssh_port=2200))
        session = await authority.session("b-info")
        info = ra.ConnectionInfo(credentials, session, ra.HostKey.generate(), ra.ScriptOptions("gw.example", 2222))
        assert json.loads(json.dumps(info)) == json.loads(info.to_json())
        assert info["gateway_port"] == 2222 and info["builder_host"] == "10.0.3.7" and info["builder_port"] == 2200
        assert info["gateway_user"] == credentials.username
        assert "remote-access-builder" in info.ssh_config("/k", "/kh")
        with pytest.raises(ra.InvalidInputError):
            ra.ConnectionInfo(credentials, session, ra.HostKey.generate(), ra.ScriptOptions("bad host;", 22))

    run(main())


def test_durations_take_timedelta_or_seconds_and_the_manual_clock_drives_the_rules() -> None:
    async def main() -> None:
        assert ra.Policy(grace=90).grace == timedelta(seconds=90)
        assert ra.Policy(grace=timedelta(minutes=5)).grace == timedelta(minutes=5)
        clock = ra.ManualClock(START)
        authority = ra.Authority(policy=ra.Policy(grace=timedelta(minutes=20)), clock=clock)
        events = authority.subscribe()
        await authority.issue("b-clock", **MANUAL, started_at=START)
        await authority.steps_completed("b-clock")
        session = await authority.session("b-clock")
        assert session.phase == "steps_completed"
        assert session.deadline == START + timedelta(minutes=20)
        assert await authority.next_deadline() == START + timedelta(minutes=20)
        clock.advance(timedelta(minutes=19))
        assert await authority.expire_due() == 0
        clock.advance(61)
        assert await authority.expire_due() == 1
        expired = await next_event(events, "expired")
        assert expired.at == START + timedelta(minutes=20, seconds=1)
        assert (await authority.session("b-clock")).is_ended

    run(main())


def test_cancelled_waits_lose_no_event() -> None:
    # Hundreds of waits cancelled by a tiny timeout while events arrive: every event is still
    # delivered once, in order (a cancelled wait puts back an event it had already taken).
    async def main() -> None:
        authority = ra.Authority()
        events = authority.subscribe()
        ids = [f"b-{i}" for i in range(200)]

        async def publish() -> None:
            for build_id in ids:
                await authority.issue(build_id, **MANUAL)
                await asyncio.sleep(0.002)

        publisher = asyncio.ensure_future(publish())
        seen: list[str] = []
        cancelled = 0
        while len(seen) < len(ids):
            try:
                seen.append((await asyncio.wait_for(events.__anext__(), 0.0003)).build_id)
            except asyncio.TimeoutError:
                cancelled += 1
        await publisher
        assert seen == ids
        assert cancelled > 0
        assert events.try_next() is None

    asyncio.run(asyncio.wait_for(main(), 120))


def test_cancelling_an_await_loses_no_event_and_close_ends_iteration() -> None:
    async def main() -> None:
        authority = ra.Authority()
        events = authority.subscribe()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(events.__anext__(), 0.1)
        await authority.issue("b-cancel", **MANUAL)
        issued = await asyncio.wait_for(events.__anext__(), 5)
        assert issued.kind == "issued" and issued.build_id == "b-cancel"

        waiting = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.05)
        events.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        assert [event async for event in events] == []

    run(main())


def test_stopping_the_gateway_and_cancelling_the_agent_release_their_sockets() -> None:
    async def main() -> None:
        authority = ra.Authority()
        gateway = ra.Gateway(authority)
        running = await gateway.start("127.0.0.1:0")
        port = running.port
        await running.stop()
        await running.stop()  # stopping twice is harmless
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

        # An agent whose "gateway" hangs up at once retries with backoff: each retry is a new
        # connection to this listener. Cancelling the awaitable must stop the retries.
        attempts = 0

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal attempts
            attempts += 1
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        fake_port = server.sockets[0].getsockname()[1]
        credentials = await authority.issue("b-agent", **MANUAL, builder=ra.Builder("127.0.0.1", reverse_tunnel=True))
        agent = asyncio.ensure_future(
            ra.run_agent(
                f"127.0.0.1:{fake_port}",
                gateway.host_key.public_key,
                credentials.agent_username or "",
                credentials.agent_private_key_openssh() or "",
                min_backoff=0.02,
                max_backoff=0.05,
            )
        )
        while attempts < 3:
            await asyncio.sleep(0.02)
        agent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await agent
        await asyncio.sleep(0.1)
        after_cancel = attempts
        await asyncio.sleep(0.5)
        assert attempts == after_cancel, "the agent kept reconnecting after its awaitable was cancelled"
        server.close()

    run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform (Windows)")
def test_a_forked_child_gets_an_error_not_a_hang() -> None:
    async def warm_up() -> None:
        await ra.Authority().issue("b-parent", **MANUAL)

    run(warm_up())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        message = b"no error"
        try:
            asyncio.run(ra.Authority().issue("b-child", **MANUAL))  # type: ignore[arg-type]
        except ra.RemoteAccessError as err:
            message = f"{err.code}: {err}".encode()
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            message = repr(err).encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    reported = os.read(read, 4096).decode()
    os.close(read)
    assert os.WEXITSTATUS(status) == 0
    assert reported.startswith("forked: ") and "spawn" in reported, reported


# Thousands of awaitables whose results arrive as asyncio.run returns and Python finalizes.
EXIT_WITH_WORK_IN_FLIGHT = """
import asyncio
import remote_access as ra

async def main() -> None:
    authority = ra.Authority()
    for _ in range(2000):
        asyncio.ensure_future(authority.session("b-exit"))
    await asyncio.sleep(0)

asyncio.run(main())
"""


def test_the_interpreter_exits_cleanly_with_work_in_flight() -> None:
    # Before the runtime was shut down at exit, a result that reached Python while it
    # finalized aborted or crashed the process now and then (2 runs in 30 here).
    for _ in range(30):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_WITH_WORK_IN_FLIGHT], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (done.returncode, done.stderr)


def test_after_exit_has_shut_the_runtime_down_new_work_is_refused() -> None:
    program = """
import asyncio
import remote_access as ra
from remote_access import _native

async def issue(build_id):
    await ra.Authority().issue(build_id, trigger="manual", remote_access_enabled=True)

asyncio.run(issue("b-before"))
_native._shutdown()  # what atexit calls
try:
    asyncio.run(issue("b-after"))
except ra.RemoteAccessError as err:
    print(f"{err.code}: {err}")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "shut_down: remote_access has shut down because the interpreter is exiting"


def test_connections_carried_by_the_platform_are_recorded_even_when_dropped() -> None:
    async def main() -> None:
        authority = ra.Authority()
        events = authority.subscribe()
        await authority.issue("b-conn", **MANUAL)
        first = await authority.connected("b-conn", "ssh")
        assert first.build_id == "b-conn" and first.protocol == "ssh" and not first.is_cut
        assert len((await authority.session("b-conn")).live_connections) == 1
        waiting = asyncio.ensure_future(first.closed())
        await first.disconnect()
        await next_event(events, "disconnected")
        # A waiting closed() returns once the connection's end is recorded.
        await asyncio.wait_for(waiting, 5)
        assert not first.is_cut
        # Only the first report counts: later ones return and change nothing.
        await first.disconnect()
        await first.detach()
        await asyncio.wait_for(first.closed(), 5)

        second = await authority.connected("b-conn", "vnc")
        second_id = second.id
        pending = asyncio.ensure_future(second.closed())
        del second  # never reported: the core records it as lost (never a logout)
        dropped = await next_event(events, "dropped")
        assert dropped.connection_id == second_id and dropped.protocol == "vnc"
        await asyncio.wait_for(pending, 5)  # and a closed() pending on it settles
        assert (await authority.session("b-conn")).live_connections == []

        third = await authority.connected("b-conn", "ssh")
        cut = asyncio.ensure_future(third.closed())
        await authority.revoke("b-conn", "done")
        await asyncio.wait_for(cut, 5)
        assert third.is_cut

    run(main())


def test_the_deadline_moves_when_the_steps_complete_and_a_lost_user_may_come_back() -> None:
    async def main() -> None:
        policy = ra.Policy(grace=timedelta(minutes=20), max_build_duration=timedelta(hours=2), reconnect_window=120)
        assert policy.reconnect_window == timedelta(minutes=2) == ra.Policy().reconnect_window
        assert ra.Policy(reconnect_window=timedelta(seconds=30)).reconnect_window == timedelta(seconds=30)
        assert "reconnect_window=" in repr(policy)
        assert "20 minutes" in policy.describe() and "2 hours" in policy.describe()
        with pytest.raises(ra.InvalidInputError):
            ra.Policy(reconnect_window=-1)
        clock = ra.ManualClock(START)
        authority = ra.Authority(policy=policy, clock=clock)
        events = authority.subscribe()
        host_key, options = ra.HostKey.generate(), ra.ScriptOptions("gw.example", 2222)
        credentials = await authority.issue("b-truth", **MANUAL, started_at=START, builder=ra.Builder("10.0.3.7"))

        # While the steps run: the deadline is the build's maximum, and the rule says so.
        session = await authority.session("b-truth")
        assert session.deadline == session.max_end == START + timedelta(hours=2)
        assert session.reconnect_by is None
        assert "20 minutes" in session.access_rule and "14:00 UTC" in session.access_rule
        info = await authority.connection_info("b-truth", host_key, options)
        assert isinstance(info, ra.ConnectionInfo)
        assert info == ra.ConnectionInfo(credentials, session, host_key, options)
        assert info["phase"] == "steps_running"
        assert info["deadline"] == info["max_end"] == "2026-11-28T14:00:00Z"
        assert info["grace"] == 1200 and info["reconnect_window"] == 120
        assert info["steps_completed_at"] is None and info["reconnect_by"] is None and info["end_reason"] is None
        assert info["access_rule"] == session.access_rule
        assert "access_ends_by" not in info
        assert info.known_hosts() and "BEGIN OPENSSH PRIVATE KEY" in info.posix_script(credentials)

        # The steps complete 10 minutes in: the deadline moves to 12:30, and an event says so.
        first = await authority.connected("b-truth", "ssh")
        clock.advance(timedelta(minutes=10))
        await authority.steps_completed("b-truth")
        changed = await next_event(events, "deadline_changed")
        assert changed.deadline == START + timedelta(minutes=30)
        assert changed.to_dict()["deadline"] == "2026-11-28T12:30:00Z" and changed.to_dict()["kind"] == "deadline_changed"
        assert changed.connection_id is None and changed.dropped is None
        session = await authority.session("b-truth")
        info.refresh(session)
        assert info["phase"] == "steps_completed" and info["deadline"] == "2026-11-28T12:30:00Z"
        assert info["steps_completed_at"] == "2026-11-28T12:10:00Z" and info["max_end"] == "2026-11-28T14:00:00Z"
        assert info["access_rule"] == session.access_rule and "12:30 UTC" in info["access_rule"]
        assert json.loads(info.to_json()) == dict(info)

        # The network loses the user's only connection: not a logout, the reconnect window opens.
        clock.advance(60)
        await first.lost()
        dropped = await next_event(events, "dropped")
        assert dropped.connection_id == first.id and dropped.protocol == "ssh" and dropped.deadline is None
        assert dropped.to_dict()["connection_id"] == first.id
        session = await authority.session("b-truth")
        assert session.reconnect_by == START + timedelta(minutes=13) and not session.is_ended
        assert "12:13 UTC" in session.access_rule
        latest = await authority.connection_info("b-truth", host_key, options)
        assert latest["reconnect_by"] == "2026-11-28T12:13:00Z" and latest["phase"] == "steps_completed"
        await first.disconnect()  # only the first report counts
        assert (await authority.session("b-truth")).reconnect_by == START + timedelta(minutes=13)

        # Back in time: the wait is over. Lost again, and nobody comes back within 2 minutes.
        clock.advance(30)
        second = await authority.connected("b-truth", "ssh")
        assert (await authority.session("b-truth")).reconnect_by is None
        await second.lost()
        await next_event(events, "dropped")
        assert await authority.next_deadline() == START + timedelta(minutes=13, seconds=30)
        clock.advance(119)
        assert await authority.expire_due() == 0
        clock.advance(1)
        assert await authority.expire_due() == 1
        ended = await next_event(events, "connection_lost")
        assert ended.at == START + timedelta(minutes=13, seconds=30)
        await next_event(events, "finish_build")
        session = await authority.session("b-truth")
        assert session.end_reason_code == "connection_lost" and session.reconnect_by is None
        info.refresh(session)
        assert info["phase"] == "ended" and info["end_reason"] == "connection_lost" and info["reconnect_by"] is None
        with pytest.raises(ra.SessionEndedError) as over:
            await authority.connected("b-truth", "ssh")
        assert over.value.end_reason_code == "connection_lost"

    run(main())


def test_connection_info_refuses_another_builds_session_and_an_unknown_build() -> None:
    async def main() -> None:
        authority = ra.Authority()
        host_key, options = ra.HostKey.generate(), ra.ScriptOptions("gw.example")
        await authority.issue("b-one", **MANUAL, builder=ra.Builder("10.0.3.7"))
        await authority.issue("b-two", **MANUAL, builder=ra.Builder("10.0.3.8"))
        info = await authority.connection_info("b-one", host_key, options)
        before = dict(info)
        with pytest.raises(ra.InvalidInputError) as other:
            info.refresh(await authority.session("b-two"))
        assert other.value.what == "session"
        assert dict(info) == before and json.loads(info.to_json()) == before
        with pytest.raises(ra.UnknownBuildError) as unknown:
            await authority.connection_info("b-nope", host_key, options)
        assert unknown.value.build_id == "b-nope"
        with pytest.raises(ra.InvalidInputError):
            authority.connection_info("no spaces allowed", host_key, options)
        # Pickles as the plain dict, like one made from credentials.
        assert pickle.loads(pickle.dumps(info)) == before

    run(main())


def test_run_housekeeping_enforces_deadlines_without_a_gateway() -> None:
    async def main() -> None:
        authority = ra.Authority(policy=ra.Policy(grace=0.2))
        events = authority.subscribe()
        await authority.issue("b-expiry", **MANUAL)
        connection = await authority.connected("b-expiry", "ssh")
        housekeeping = asyncio.ensure_future(authority.run_housekeeping())
        await authority.steps_completed("b-expiry")
        await next_event(events, "expired", timeout=30)
        await asyncio.wait_for(connection.closed(), 5)
        session = await authority.session("b-expiry")
        assert session.end_reason_code == "grace_elapsed"
        housekeeping.cancel()

    run(main())


def test_gateway_stats_count_connections() -> None:
    async def settle(gateway: ra.Gateway, key: Literal["ssh_connections"], value: int) -> ra.GatewayStats:
        for _ in range(300):
            if gateway.stats()[key] == value:
                break
            await asyncio.sleep(0.02)
        return gateway.stats()

    async def main() -> None:
        authority = ra.Authority()
        with pytest.raises(ra.InvalidInputError):
            ra.Gateway(authority, failures_before_backoff=0)
        with pytest.raises(ra.InvalidInputError):
            ra.Gateway(authority, max_connections_per_build=0)
        with pytest.raises(ra.InvalidInputError) as refused:
            ra.Gateway(authority, worker_threads=100_000)
        assert refused.value.what == "worker_threads"
        # On worker threads of its own: the connection below is served and counted there.
        gateway = ra.Gateway(
            authority, failures_before_backoff=3, silent_timeout=2.5, max_unauthenticated_per_prefix=64,
            builder_stall_timeout=30,
            max_connections_per_build=4, max_channels_per_build=8, worker_threads=2,
        )
        # The host key is an option like the others; without it the gateway makes one.
        pinned = ra.HostKey.generate()
        assert ra.Gateway(authority, host_key=pinned).host_key.fingerprint == pinned.fingerprint
        assert gateway.host_key.fingerprint != pinned.fingerprint
        idle = {
            "ssh_connections": 0, "vnc_connections": 0, "unauthenticated": 0,
            "builder_channels": 0, "addresses_with_failures": 0, "evicted": 0, "rate_limited": 0,
        }
        async with gateway.start("127.0.0.1:0") as running:
            assert gateway.stats() == idle
            _, writer = await asyncio.open_connection(running.host, running.port)
            busy = await settle(gateway, "ssh_connections", 1)
            assert busy == {**idle, "ssh_connections": 1, "unauthenticated": 1}
            writer.close()
            assert await settle(gateway, "ssh_connections", 0) == idle

    run(main())


def test_the_ssh_algorithms_and_the_connection_rate_are_options() -> None:
    async def main() -> None:
        authority = ra.Authority()
        with pytest.raises(ra.InvalidInputError) as refused:
            ra.Gateway(authority, ciphers=["aes128-gcm"])
        assert refused.value.code == "invalid_input" and refused.value.what == "ciphers"
        assert '"aes128-gcm" is not supported' in str(refused.value)
        assert "aes128-gcm@openssh.com" in str(refused.value)
        with pytest.raises(ra.InvalidInputError):
            ra.Gateway(authority, new_connections_per_second=0)
        gateway = ra.Gateway(
            authority, ciphers=["aes128-gcm@openssh.com"], macs=["hmac-sha2-256"],
            kex_algorithms=["curve25519-sha256"], new_connections_per_second=5, new_connections_burst=10,
        )
        async with gateway.start("127.0.0.1:0"):
            assert gateway.stats()["rate_limited"] == 0

    run(main())


def test_a_subscriber_that_falls_behind_gets_a_lagged_event_with_the_count() -> None:
    async def main() -> None:
        with pytest.raises(ra.InvalidInputError) as refused:
            ra.Authority(event_queue=0)
        assert refused.value.what == "event_queue"
        authority = ra.Authority(event_queue=3)
        assert authority.event_queue == 3
        slow, fast = authority.subscribe(), authority.subscribe()
        fast_seen: list[str] = []
        for i in range(8):
            await authority.issue(f"b-lag-{i}", **MANUAL)
            while (event := fast.try_next()) is not None:
                fast_seen.append(f"{event.kind} {event.build_id}")
        # Three were queued; the five after them were dropped, and one event stands for them.
        got = [await asyncio.wait_for(slow.__anext__(), 5) for _ in range(4)]
        assert [(e.kind, e.build_id) for e in got] == [
            ("issued", "b-lag-0"), ("issued", "b-lag-1"), ("issued", "b-lag-2"), ("lagged", "b-lag-3"),
        ]
        lagged = got[3]
        assert lagged.dropped == 5 and got[0].dropped is None
        assert "5 events were not delivered" in lagged.reason
        assert lagged.to_dict()["dropped"] == 5 and lagged.to_dict()["kind"] == "lagged"
        assert slow.try_next() is None
        # Caught up: what follows arrives in order, and the fast reader missed nothing.
        await authority.revoke("b-lag-7", "done")
        assert (await asyncio.wait_for(slow.__anext__(), 5)).kind == "revoked"
        assert fast_seen == [f"issued b-lag-{i}" for i in range(8)]

    run(main())


def test_a_tls_identity_is_generated_persisted_and_reloaded() -> None:
    identity = ra.TlsIdentity.generate(["gw.example", "127.0.0.1"])
    pairs = identity.fingerprint.split(":")
    assert len(pairs) == 32 and all(len(p) == 2 and p == p.upper() for p in pairs), identity.fingerprint
    assert all(int(p, 16) >= 0 for p in pairs)
    assert identity.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    key = identity.private_key_pem()
    assert key.startswith("-----BEGIN ") and "PRIVATE KEY-----" in key
    again = ra.TlsIdentity.from_pem(identity.certificate_pem, key)
    assert again.fingerprint == identity.fingerprint and again.certificate_pem == identity.certificate_pem
    # The key stays out of repr and pickles, as HostKey's does.
    body = key.strip().splitlines()[1]
    assert identity.fingerprint in repr(identity) and body not in repr(identity) and body not in str(identity)
    with pytest.raises(TypeError):
        pickle.dumps(identity)
    # Refused input is the core's invalid_input, never a key in the message.
    other = ra.TlsIdentity.generate(["other.example"])
    with pytest.raises(ra.InvalidInputError) as mismatch:
        ra.TlsIdentity.from_pem(identity.certificate_pem, other.private_key_pem())
    assert mismatch.value.code == "invalid_input" and "does not fit" in str(mismatch.value)
    assert other.private_key_pem().strip().splitlines()[1] not in str(mismatch.value)
    for cert, pem in [("", key), ("hello", key), (identity.certificate_pem, "not a key")]:
        with pytest.raises(ra.InvalidInputError) as refused:
            ra.TlsIdentity.from_pem(cert, pem)
        assert refused.value.code == "invalid_input"
    with pytest.raises(ra.InvalidInputError) as no_names:
        ra.TlsIdentity.generate([])
    assert no_names.value.what == "names"
    with pytest.raises(TypeError):
        ra.TlsIdentity.generate("gw.example")  # type: ignore[arg-type]


def test_the_vnc_encryption_options_reach_the_gateway() -> None:
    async def main() -> None:
        vnc_port = free_port()
        authority = ra.Authority(vnc_ports=[vnc_port])
        identity = ra.TlsIdentity.generate(["127.0.0.1"])
        with pytest.raises(ra.InvalidInputError) as refused:
            ra.Gateway(authority, vnc_require_encryption=True)
        assert refused.value.code == "invalid_input" and refused.value.what == "vnc_require_encryption"
        with pytest.raises(ra.InvalidInputError) as origin:
            ra.Gateway(authority, vnc_tls=identity, vnc_websocket_origins=["ci.example.com"])
        assert origin.value.what == "vnc_websocket_origins"
        ra.Gateway(authority, vnc_tls=identity, vnc_websocket=False)
        gateway = ra.Gateway(
            authority, vnc_tls=identity, vnc_require_encryption=True, vnc_websocket=True,
            vnc_websocket_origins=["https://ci.example.com"],
        )
        async with gateway.start("127.0.0.1:0") as running:
            # A browser's wss:// starts with TLS on the VNC port: the certificate is the identity's.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _, writer = await asyncio.open_connection(running.host, vnc_port, ssl=context)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            assert ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()) == identity.fingerprint

    run(main())


def test_connection_info_carries_the_vnc_encryption() -> None:
    async def main() -> None:
        vnc_port = free_port()
        authority = ra.Authority(vnc_ports=[vnc_port])
        credentials = await authority.issue("b-tls", **MANUAL, builder=ra.Builder("10.0.3.7", vnc_port=5900))
        session = await authority.session("b-tls")
        assert session.vnc_port == vnc_port
        host_key = ra.HostKey.generate()
        fingerprint = ra.TlsIdentity.generate(["gw.example"]).fingerprint

        options = ra.ScriptOptions("gw.example", 2222, vnc_tls_fingerprint=fingerprint, vnc_require_encryption=True)
        assert options.vnc_tls_fingerprint == fingerprint
        assert options.vnc_require_encryption is True and options.vnc_websocket is True
        assert "vnc_require_encryption=True" in repr(options)
        info = ra.ConnectionInfo(credentials, session, host_key, options)
        assert info["vnc_tls_fingerprint"] == fingerprint and info["vnc_require_encryption"] is True
        assert info["vnc_websocket_url"] == f"wss://gw.example:{vnc_port}/websockify"
        assert json.loads(json.dumps(info)) == json.loads(info.to_json())
        instructions = info.vnc_instructions(credentials)
        assert instructions is not None
        assert fingerprint in instructions and "VeNCrypt" in instructions
        assert f"wss://gw.example:{vnc_port}/websockify" in instructions

        # The defaults: no certificate, plain ws://, nothing required.
        plain = ra.ConnectionInfo(credentials, session, host_key, ra.ScriptOptions("gw.example", 2222))
        assert plain["vnc_tls_fingerprint"] is None and plain["vnc_require_encryption"] is False
        assert plain["vnc_websocket_url"] == f"ws://gw.example:{vnc_port}/websockify"
        no_ws = ra.ScriptOptions("gw.example", vnc_tls_fingerprint=fingerprint, vnc_websocket=False)
        assert ra.ConnectionInfo(credentials, session, host_key, no_ws)["vnc_websocket_url"] is None

        # Inconsistent options are the core's invalid_input.
        with pytest.raises(ra.InvalidInputError) as required:
            ra.ConnectionInfo(credentials, session, host_key, ra.ScriptOptions("gw.example", vnc_require_encryption=True))
        assert required.value.code == "invalid_input" and required.value.what == "vnc_require_encryption"
        with pytest.raises(ra.InvalidInputError) as bad:
            ra.ConnectionInfo(credentials, session, host_key, ra.ScriptOptions("gw.example", vnc_tls_fingerprint="AB:CD"))
        assert bad.value.what == "vnc_tls_fingerprint"

        # VNC only through the SSH tunnel (no gateway VNC port): still instructions, no URL.
        tunnel_only = ra.Authority()
        tunnel_credentials = await tunnel_only.issue("b-tunnel", **MANUAL, builder=ra.Builder("10.0.3.7", vnc_port=5900))
        tunnel_session = await tunnel_only.session("b-tunnel")
        tunnel_info = ra.ConnectionInfo(tunnel_credentials, tunnel_session, host_key, options)
        assert tunnel_info["vnc_port"] is None and tunnel_info["vnc_websocket_url"] is None
        assert tunnel_info["builder_vnc_port"] == 5900
        tunnel_text = tunnel_info.vnc_instructions(tunnel_credentials)
        assert tunnel_text is not None and "ssh tunnel" in tunnel_text and "--vnc" in tunnel_text
        assert tunnel_credentials.vnc_password() in tunnel_text

    run(main())
