"""The Python API drives a real gateway: the generated script runs with the real `ssh` client
against a real `sshd` builder; revoke, deadline and logout arrive through `async for`; VNC
through the real `vncdo` client against TigerVNC; the reverse tunnel through `run_agent`."""

from __future__ import annotations

import asyncio
import os
import pathlib
import tempfile
from datetime import datetime, timedelta, timezone
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

import remote_access as ra
from conftest import Sshd, VncServer, free_port, listening, next_event, stop


@dataclass
class Kit:
    authority: ra.Authority
    gateway: ra.Gateway
    running: ra.RunningGateway
    events: ra.Subscription
    scratch: pathlib.Path


@asynccontextmanager
async def serving(**authority_options: object) -> AsyncIterator[Kit]:
    authority = ra.Authority(**authority_options)  # type: ignore[arg-type]
    events = authority.subscribe()
    gateway = ra.Gateway(authority, auth_rejection_delay=0.05)
    with tempfile.TemporaryDirectory(prefix="ra-py-") as scratch:
        async with gateway.start("127.0.0.1:0") as running:
            yield Kit(authority, gateway, running, events, pathlib.Path(scratch))
    events.close()


async def issue(kit: Kit, build_id: str, builder: ra.Builder, **request: object) -> tuple[ra.Credentials, pathlib.Path]:
    """Issues credentials and writes the build's POSIX script; returns both."""
    credentials = await kit.authority.issue(
        build_id, trigger="manual", remote_access_enabled=True, builder=builder, **request  # type: ignore[arg-type]
    )
    return credentials, write_script(kit, credentials, await kit.authority.session(build_id))


def write_script(kit: Kit, credentials: ra.Credentials, session: ra.Session) -> pathlib.Path:
    """Writes the build's POSIX script for this kit's gateway."""
    info = ra.ConnectionInfo(
        credentials, session, kit.gateway.host_key, ra.ScriptOptions("127.0.0.1", kit.running.port)
    )
    script = kit.scratch / f"{credentials.build_id}-{kit.running.port}.sh"
    script.write_text(info.posix_script(credentials))
    os.chmod(script, 0o700)
    return script


async def run_script(script: pathlib.Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "sh", str(script), *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def test_script_reaches_the_builder_and_revoke_cuts_a_live_session(sshd: Sshd) -> None:
    async def main() -> None:
        async with serving() as kit:
            credentials, script = await issue(kit, "py-revoke", sshd.builder())
            sshd.authorize(credentials.authorized_keys_line())
            await next_event(kit.events, "issued")

            code, out, err = await run_script(script, "printenv", "FCI_BUILD_DIR")
            assert code == 0, err
            assert out.strip() == str(sshd.build_dir)
            first = await next_event(kit.events, "connected")
            gone = await next_event(kit.events, "disconnected")
            assert gone.connection_id == first.connection_id

            live = await asyncio.create_subprocess_exec(
                "sh", str(script), "sleep", "600",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            connected = await next_event(kit.events, "connected")
            assert connected.build_id == "py-revoke" and connected.protocol == "ssh"
            assert connected.connection_id != first.connection_id
            live_ids = [cid for cid, _ in (await kit.authority.session("py-revoke")).live_connections]
            assert live_ids == [connected.connection_id]

            await kit.authority.revoke("py-revoke", "security review")
            revoked = await next_event(kit.events, "revoked")
            assert "security review" in revoked.reason
            _, stderr = await asyncio.wait_for(live.communicate(), 30)
            assert live.returncode != 0
            assert b"remote access" in stderr, stderr
            session = await kit.authority.session("py-revoke")
            assert session.is_ended and session.phase == "ended"

            code, _, err = await run_script(script, "true")
            assert code == 255 and "Permission denied" in err, err

    asyncio.run(main())


def test_deadline_cuts_the_user_and_asks_to_finish_the_build_once(sshd: Sshd) -> None:
    async def main() -> None:
        async with serving(policy=ra.Policy(grace=2)) as kit:
            credentials, script = await issue(kit, "py-deadline", sshd.builder())
            sshd.authorize(credentials.authorized_keys_line())
            live = await asyncio.create_subprocess_exec(
                "sh", str(script), "sleep", "600",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await next_event(kit.events, "connected")
            await kit.authority.steps_completed("py-deadline")
            expired = await next_event(kit.events, "expired")
            assert expired.build_id == "py-deadline"
            await next_event(kit.events, "finish_build")
            await asyncio.wait_for(live.wait(), 30)
            assert live.returncode != 0
            session = await kit.authority.session("py-deadline")
            assert session.end_reason is not None and "grace" in session.end_reason

    asyncio.run(main())


def test_logout_after_the_steps_ends_the_build(sshd: Sshd) -> None:
    async def main() -> None:
        async with serving() as kit:
            credentials, script = await issue(kit, "py-logout", sshd.builder())
            sshd.authorize(credentials.authorized_keys_line())
            await kit.authority.steps_completed("py-logout")
            code, _, err = await run_script(script, "true")
            assert code == 0, err
            logged_out = await next_event(kit.events, "logged_out")
            assert logged_out.build_id == "py-logout"
            await next_event(kit.events, "finish_build")
            code, _, _ = await run_script(script, "true")
            assert code == 255, "no way back in after the logout"

    asyncio.run(main())


def test_metrics_parse_as_prometheus_and_follow_a_login(sshd: Sshd) -> None:
    """``metrics_text()`` and the ``metrics_address`` endpoint, read with prometheus_client's
    own parser (a second implementation of the format): a login shows in the counters."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def main() -> None:
        port = free_port()
        authority = ra.Authority()
        gateway = ra.Gateway(authority, metrics_address=f"127.0.0.1:{port}", auth_rejection_delay=0.05)
        with pytest.raises(ra.InvalidInputError, match="metrics_address"):
            ra.Gateway(authority, metrics_address="port 9100")
        async with gateway.start("127.0.0.1:0") as running:
            with tempfile.TemporaryDirectory(prefix="ra-py-") as scratch:
                kit = Kit(authority, gateway, running, authority.subscribe(), pathlib.Path(scratch))
                credentials, script = await issue(kit, "py-metrics", sshd.builder())
                sshd.authorize(credentials.authorized_keys_line())
                code, _, err = await run_script(script, "true")
                assert code == 0, err
                kit.events.close()
            assert gateway.ready()
            here = samples(gateway.metrics_text())
            assert here[("remote_access_logins_accepted_total", (("protocol", "ssh"),))] == 1
            assert here[("remote_access_store_up", ())] == 1
            served = await asyncio.to_thread(lambda: urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read())
            assert samples(served.decode())[("remote_access_logins_accepted_total", (("protocol", "ssh"),))] == 1
            health = await asyncio.to_thread(lambda: urlopen(f"http://127.0.0.1:{port}/healthz", timeout=20).read())
            assert health == b"ready\n"

    asyncio.run(main())


def test_a_gateway_drains_while_the_next_serves_on_the_same_port(sshd: Sshd) -> None:
    """Two gateways on one port (``reuse_port``): the first drains, keeping its live session
    until the user leaves, while a new login gets in through the second."""

    async def main() -> None:
        authority = ra.Authority()
        events = authority.subscribe()
        host_key = ra.HostKey.generate()
        first = ra.Gateway(authority, host_key=host_key, reuse_port=True, auth_rejection_delay=0.05)
        second = ra.Gateway(authority, host_key=host_key, reuse_port=True, auth_rejection_delay=0.05)
        running = await first.start("127.0.0.1:0")
        with tempfile.TemporaryDirectory(prefix="ra-py-") as scratch:
            kit = Kit(authority, first, running, events, pathlib.Path(scratch))
            credentials, script = await issue(kit, "py-drain", sshd.builder())
            sshd.authorize(credentials.authorized_keys_line())
            live = await asyncio.create_subprocess_exec(
                "sh", str(script), 'echo ready; read line; echo "got $line"',
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert live.stdin is not None and live.stdout is not None
            assert (await asyncio.wait_for(live.stdout.readline(), 60)) == b"ready\n"
            await next_event(events, "connected")
            async with second.start(f"127.0.0.1:{running.port}"):
                draining = asyncio.ensure_future(running.drain(timedelta(minutes=10)))
                while running.serving:
                    await asyncio.sleep(0.05)
                code, out, err = await run_script(script, "echo in")
                assert (code, out) == (0, "in\n"), err
                assert not draining.done(), "the live session holds the first gateway"
                assert first.stats()["ssh_connections"] == 1
                live.stdin.write(b"still here\n")
                assert (await asyncio.wait_for(live.stdout.readline(), 60)) == b"got still here\n"
                assert await asyncio.wait_for(live.wait(), 60) == 0
                await asyncio.wait_for(draining, 60)
                assert first.stats()["ssh_connections"] == 0
                await running.drain(1)  # a stopped gateway: nothing to do
        events.close()

    asyncio.run(main())


def test_vnc_through_the_gateway_with_the_per_build_password(tigervnc: VncServer) -> None:
    async def vncdo(port: int, password: str, shot: pathlib.Path) -> int:
        proc = await asyncio.create_subprocess_exec(
            "vncdo", "-s", f"127.0.0.1::{port}", "-p", password, "capture", str(shot),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), 60)

    async def main() -> None:
        async with serving(vnc_ports=[free_port()]) as kit:
            builder = ra.Builder("127.0.0.1", vnc_port=tigervnc.port)
            credentials = await kit.authority.issue(
                "py-vnc", trigger="manual", remote_access_enabled=True, builder=builder, builder_vnc_password=tigervnc.password
            )
            session = await kit.authority.session("py-vnc")
            assert session.vnc_port is not None
            shot = kit.scratch / "shot.png"
            assert await vncdo(session.vnc_port, credentials.vnc_password(), shot) == 0
            png = shot.read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
            assert (width, height) == (tigervnc.width, tigervnc.height)
            connected = await next_event(kit.events, "connected")
            assert connected.protocol == "vnc"
            # The builder's own password does not open the gateway.
            assert await vncdo(session.vnc_port, tigervnc.password, kit.scratch / "no.png") != 0

    asyncio.run(main())


def test_reverse_tunnel_through_the_agent(sshd: Sshd) -> None:
    async def main() -> None:
        async with serving() as kit:
            credentials, script = await issue(kit, "py-reverse", sshd.builder(reverse_tunnel=True))
            sshd.authorize(credentials.authorized_keys_line())
            agent_key = credentials.agent_private_key_openssh()
            assert agent_key is not None and credentials.agent_username is not None
            agent = asyncio.ensure_future(
                ra.run_agent(
                    f"127.0.0.1:{kit.running.port}",
                    kit.gateway.host_key.public_key,
                    credentials.agent_username,
                    agent_key,
                    ports=[sshd.port],
                )
            )
            await next_event(kit.events, "tunnel_registered")
            code, out, err = await run_script(script, "printenv", "FCI_BUILD_DIR")
            assert code == 0, err
            assert out.strip() == str(sshd.build_dir)
            # Access ending stops the agent by itself.
            await kit.authority.revoke("py-reverse", "done")
            assert await asyncio.wait_for(agent, 30) == "session_ended"

    asyncio.run(main())


def test_two_gateways_on_one_redis_share_sessions_and_revocations(sshd: Sshd, redis_url: str) -> None:
    """Each gateway has its own authority on the same Redis (as separate processes would):
    credentials issued through A work through B, and revoking through A cuts B's connection."""

    async def main() -> None:
        async with serving(redis_url=redis_url) as a, serving(redis_url=redis_url) as b:
            credentials, _ = await issue(a, "py-fleet", sshd.builder())
            sshd.authorize(credentials.authorized_keys_line())
            script_b = write_script(b, credentials, await b.authority.session("py-fleet"))
            proc = await asyncio.create_subprocess_exec(
                "sh", str(script_b), "echo ready; sleep 600",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)) == b"ready\n"
            await next_event(b.events, "connected")

            await a.authority.revoke("py-fleet", "revoked through gateway A")
            assert await asyncio.wait_for(proc.wait(), 30) != 0
            with pytest.raises(ra.AccessDeniedError):
                await b.authority.verify_ssh(credentials.username, credentials.public_key)
            assert a.authority.max_store_outage == timedelta(seconds=30)

    asyncio.run(main())


def test_a_required_replica_that_is_missing_keeps_the_gateway_from_ready(redis_url: str) -> None:
    """``redis_min_replicas=1`` on a Redis without a replica: the gateway refuses logins (fail
    closed), and ``ready()`` says so; without the requirement it is ready."""

    async def main() -> None:
        strict = ra.Gateway(ra.Authority(redis_url=redis_url, redis_min_replicas=1))
        default = ra.Gateway(ra.Authority(redis_url=redis_url))
        async with strict.start("127.0.0.1:0"), default.start("127.0.0.1:0"):
            for _ in range(100):
                if default.ready() and not strict.ready():
                    break
                await asyncio.sleep(0.1)
            assert default.ready()
            assert not strict.ready()

    asyncio.run(main())


def test_the_fleet_event_log_has_every_gateways_events_and_resumes_after_an_id(sshd: Sshd, redis_url: str) -> None:
    """Two gateways on one Redis; a platform reads both gateways' events from the fleet's log,
    and a reader started after an id reads on from there."""

    async def main() -> None:
        async with serving(redis_url=redis_url) as a, serving(redis_url=redis_url) as b:
            log = await a.authority.fleet_events()
            credentials, _ = await issue(a, "py-fleet-log", sshd.builder())
            sshd.authorize(credentials.authorized_keys_line())
            script_b = write_script(b, credentials, await b.authority.session("py-fleet-log"))
            code, _, err = await run_script(script_b, "true")
            assert code == 0, err
            seen: list[tuple[str, ra.Event]] = []
            async for event_id, event in log:
                if event.build_id == "py-fleet-log":
                    seen.append((event_id, event))
                if len(seen) == 3:
                    break
            assert [event.kind for _, event in seen] == ["issued", "connected", "disconnected"]
            resumed = await b.authority.fleet_events(after=seen[0][0])
            again = [await anext(resumed), await anext(resumed)]
            assert [(event_id, event.kind) for event_id, event in again] == [
                (event_id, event.kind) for event_id, event in seen[1:]
            ]
            with pytest.raises(ra.InvalidInputError):
                await a.authority.fleet_events(after="not an id")

    asyncio.run(asyncio.wait_for(main(), 120))


def test_a_redis_store_refuses_bad_settings_and_reports_an_unreachable_redis() -> None:
    with pytest.raises(ra.InvalidInputError, match="redis url"):
        ra.Authority(redis_url="http://example.invalid")
    with pytest.raises(ra.InvalidInputError, match="manual clock"):
        ra.Authority(redis_url="redis://127.0.0.1:1/0", clock=ra.ManualClock(datetime.now(timezone.utc)))
    with pytest.raises(ra.InvalidInputError, match="max_store_outage"):
        ra.Authority(redis_url="redis://127.0.0.1:1/0", max_store_outage=0)

    async def main() -> None:
        nowhere = ra.Authority(redis_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
        with pytest.raises(ra.StoreUnavailableError) as refused:
            await nowhere.issue("py-nowhere", trigger="manual", remote_access_enabled=True)
        assert "hunter2" not in str(refused.value)

    asyncio.run(main())


def test_an_authority_reaches_redis_over_tls_with_a_ca_and_a_client_certificate(tmp_path: pathlib.Path) -> None:
    """A real redis-server serving only TLS and requiring client certificates: with the CA and
    the client certificate, one authority issues and another reads the session; without the
    certificate the handshake fails and the store is unavailable; TLS settings need a URL."""
    server = ra.TlsIdentity.generate(["127.0.0.1"])
    client = ra.TlsIdentity.generate(["platform.example"])
    files = {"server.pem": server.certificate_pem, "server.key": server.private_key_pem()}
    files["clients-ca.pem"] = client.certificate_pem
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    port, proc = listening(
        lambda port: [
            "redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
            "--tls-auth-clients", "yes", "--tls-cert-file", str(tmp_path / "server.pem"),
            "--tls-key-file", str(tmp_path / "server.key"), "--tls-ca-cert-file", str(tmp_path / "clients-ca.pem"),
            "--save", "", "--appendonly", "no",
        ],
        "redis-server (TLS)",
    )
    url = f"rediss://127.0.0.1:{port}/0"
    with pytest.raises(ra.InvalidInputError, match="need redis_url"):
        ra.Authority(redis_tls_ca=server.certificate_pem)
    with pytest.raises(ra.InvalidInputError, match="use rediss://"):
        ra.Authority(redis_url=f"redis://127.0.0.1:{port}/0", redis_tls_ca=server.certificate_pem)

    def on_tls() -> ra.Authority:
        return ra.Authority(
            redis_url=url,
            redis_tls_ca=server.certificate_pem,
            redis_tls_client=(client.certificate_pem, client.private_key_pem()),
        )

    async def main() -> None:
        await on_tls().issue("py-tls", trigger="manual", remote_access_enabled=True)
        assert (await on_tls().session("py-tls")).build_id == "py-tls"
        anonymous = ra.Authority(redis_url=url, redis_tls_ca=server.certificate_pem)
        with pytest.raises(ra.StoreUnavailableError):
            await anonymous.issue("py-tls-anonymous", trigger="manual", remote_access_enabled=True)

    try:
        asyncio.run(main())
    finally:
        stop(proc)


def test_certificates_let_the_build_into_a_builder_that_trusts_the_ca_until_revoked(tmp_path: pathlib.Path) -> None:
    """The builder's real sshd trusts the user CA (no authorized_keys at all), presents a host
    certificate from the host CA, and reads the authority's KRL."""
    import subprocess

    user_ca, host_ca = ra.SshCa.generate(), ra.SshCa.generate()
    assert "PRIVATE" not in repr(user_ca) and user_ca.fingerprint in repr(user_ca)
    assert ra.SshCa.from_openssh(user_ca.to_openssh()).public_key == user_ca.public_key

    async def main() -> None:
        async with serving(user_ca=user_ca, certificate_source_addresses=["127.0.0.1"], host_ca=host_ca) as kit:
            d = tmp_path
            os.makedirs("/run/sshd", exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
            host_key = " ".join((d / "host.pub").read_text().split()[:2])
            (d / "host-cert.pub").write_text(kit.authority.certify_host(host_key, ["127.0.0.1"], timedelta(hours=1)) + "\n")
            (d / "user-ca.pub").write_text(user_ca.public_key + "\n")
            krl = await kit.authority.revoked_keys()
            assert isinstance(krl, bytes) and krl.startswith(b"SSHKRL\n\0")
            (d / "revoked.krl").write_bytes(krl)
            (d / "sshd_config").write_text(
                f"ListenAddress 127.0.0.1\nHostKey {d}/host\nHostCertificate {d}/host-cert.pub\nPidFile {d}/sshd.pid\n"
                f"TrustedUserCAKeys {d}/user-ca.pub\nRevokedKeys {d}/revoked.krl\nAuthorizedKeysFile none\n"
                "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\nUsePAM no\nAllowTcpForwarding yes\n"
            )
            with open(d / "sshd.log", "wb") as log:
                port, proc = listening(
                    lambda port: ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                    "sshd",
                    stderr=log,
                )
            try:
                builder = ra.Builder("127.0.0.1", ssh_port=port, user="root")
                credentials = await kit.authority.issue(
                    "py-cert", trigger="manual", remote_access_enabled=True, builder=builder
                )
                assert credentials.certificate is not None
                assert credentials.certificate.startswith("ssh-ed25519-cert-v01@openssh.com ")
                assert "certificate" not in repr(credentials) or "redacted" in repr(credentials)
                session = await kit.authority.session("py-cert")
                options = ra.ScriptOptions("127.0.0.1", kit.running.port, builder_host_ca=host_ca.public_key)
                info = ra.ConnectionInfo(credentials, session, kit.gateway.host_key, options)
                assert info["builder_host_ca"] == host_ca.public_key
                text = info.posix_script(credentials)
                assert "accept-new" not in text and "@cert-authority 127.0.0.1," in text
                config = info.ssh_config_with_certificate("/k", "/k.cert", "/kh")
                assert 'CertificateFile "/k.cert"' in config
                script = kit.scratch / "cert.sh"
                script.write_text(text)
                code, out, err = await run_script(script, "echo", "by-certificate")
                assert code == 0, err + (d / "sshd.log").read_text()
                assert out.strip() == "by-certificate"
                # Revoked: the builder itself refuses the certificate once the KRL lists it,
                # even to a client that bypasses the gateway.
                (d / "k").write_text(credentials.private_key_openssh())
                os.chmod(d / "k", 0o600)
                (d / "k.cert").write_text(credentials.certificate + "\n")
                direct = [
                    "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-i", str(d / "k"), "-o", f"CertificateFile={d / 'k.cert'}", "-p", str(port), "root@127.0.0.1", "true",
                ]
                assert subprocess.run(direct, capture_output=True).returncode == 0
                await kit.authority.revoke("py-cert", "test")
                (d / "revoked.krl").write_bytes(await kit.authority.revoked_keys())
                assert subprocess.run(direct, capture_output=True).returncode == 255
            finally:
                stop(proc)

    asyncio.run(main())


def test_certificate_settings_are_checked() -> None:
    with pytest.raises(ra.InvalidInputError):
        ra.SshCa.from_openssh("not a key")
    with pytest.raises(ra.InvalidInputError) as refused:
        ra.Authority(user_ca=ra.SshCa.generate())  # no source addresses: it would open every builder
    assert refused.value.what == "certificate_source_addresses"
    with pytest.raises(ra.InvalidInputError):
        ra.Authority(user_ca=ra.SshCa.generate(), certificate_source_addresses=["10.0.0.0/33"])
    with pytest.raises(ra.InvalidInputError):
        ra.Authority().certify_host("ssh-ed25519 AAAA", ["127.0.0.1"], 60)  # no host CA
    authority = ra.Authority(host_ca=ra.SshCa.generate())
    with pytest.raises(ra.InvalidInputError):
        authority.certify_host(ra.HostKey.generate().public_key, ["not-an-address"], 60)
    cert = authority.certify_host(ra.HostKey.generate().public_key, ["10.0.0.7"], 60)
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(ra.SshCa.generate())
