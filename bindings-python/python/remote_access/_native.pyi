"""Type stubs for the compiled core (``remote_access._native``), re-exported by
``remote_access``. Every class, method and property has a docstring here, for editors."""

from collections.abc import Awaitable, Generator, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn, TypeAlias, final

from remote_access import ConnectionInfo as _PublicConnectionInfo
from remote_access import Subscription as _PublicSubscription
from remote_access._types import (
    AgentExit,
    ConnectionProtocol,
    DenialReason,
    EndReasonCode,
    ErrorCode,
    EventDict,
    EventKind,
    GatewayStats,
    Phase,
    Trigger,
)

__version__: str
"""The package's version."""

__all__ = [
    "AccessDeniedError",
    "Authority",
    "BuildExistsError",
    "Builder",
    "ConnectionInfo",
    "ContentionError",
    "Credentials",
    "Event",
    "FleetEvents",
    "Gateway",
    "GatewayStart",
    "HostKey",
    "HostKeyMismatchError",
    "InternalError",
    "InvalidInputError",
    "KeyMaterialError",
    "LiveConnection",
    "ManualClock",
    "NoCapacityError",
    "NotManuallyTriggeredError",
    "Policy",
    "RemoteAccessDisabledError",
    "RemoteAccessError",
    "RunningGateway",
    "ScriptOptions",
    "Session",
    "SessionEndedError",
    "SshCa",
    "StoreUnavailableError",
    "Subscription",
    "TlsIdentity",
    "UnknownBuildError",
    "__version__",
    "_error_for_test",
    "_shutdown",
    "cli_main",
    "reset_log_cache",
    "run_agent",
    "vnc_auth_response",
    "vnc_password_file",
]

_Duration: TypeAlias = timedelta | float
"""A duration argument: a ``timedelta`` or a number of seconds."""

class RemoteAccessError(Exception):
    """Base class of every error remote_access raises (besides ``OSError`` for network and
    file failures). ``code`` says which kind; each kind of the core has its own subclass."""

    code: ErrorCode
    """A stable code for the kind of error, e.g. ``access_denied``."""

class NotManuallyTriggeredError(RemoteAccessError):
    """The build was not started by hand; remote access is only offered for manual builds.
    Code ``not_manually_triggered``."""

    build_id: str
    """The build that asked for access."""

class RemoteAccessDisabledError(RemoteAccessError):
    """Remote access is not enabled for the build. Code ``remote_access_disabled``."""

    build_id: str
    """The build that asked for access."""

class InvalidInputError(RemoteAccessError):
    """An argument was refused. Code ``invalid_input``."""

    what: str
    """Which input was refused, e.g. ``build id``, ``trigger``, ``ciphers``."""
    problem: str
    """Why it was refused."""

class BuildExistsError(RemoteAccessError):
    """The build already has credentials; each build gets one set. Code ``build_exists``."""

    build_id: str
    """The build id that is already in use."""

class UnknownBuildError(RemoteAccessError):
    """No remote access session exists for the build (never issued, or purged). Code
    ``unknown_build``."""

    build_id: str
    """The build id that was looked up."""

class SessionEndedError(RemoteAccessError):
    """The build's remote access has ended (revoked, expired, logged out); its credentials
    are revoked for good. Code ``session_ended``."""

    build_id: str
    """The build whose session ended."""
    reason: str
    """Why it ended, in words."""
    end_reason_code: EndReasonCode
    """Why it ended, as a stable code."""

class AccessDeniedError(RemoteAccessError):
    """A credential was refused. Code ``access_denied``."""

    reason: DenialReason
    """Why: ``unknown_user``, ``wrong_key``, ``wrong_password`` or ``revoked``."""

class StoreUnavailableError(RemoteAccessError):
    """The credential store could not be reached; retry later. Code ``store_unavailable``."""

class NoCapacityError(RemoteAccessError):
    """Out of a bounded resource (e.g. every VNC port is in use). Code ``no_capacity``."""

class HostKeyMismatchError(RemoteAccessError):
    """A peer's host key is not the pinned one. Code ``host_key_mismatch``."""

    host: str
    """The server that presented the wrong key."""

class ContentionError(RemoteAccessError):
    """Too many writers changed the same session at once and this call gave up; retry it (it
    changed nothing). Code ``contention``."""

class InternalError(RemoteAccessError):
    """A task of the library failed unexpectedly: a bug in remote_access; please report it
    with the logs. Code ``internal``."""

class KeyMaterialError(RemoteAccessError):
    """Key material could not be generated, parsed or encoded. Code ``key_material``."""

@final
class Policy:
    """How long access lasts: ``grace`` after the build steps complete (default 20 minutes),
    never past ``max_build_duration`` from the build's start (default 2 hours); optionally
    ended early when nobody connected within ``finish_if_unused_after`` of the steps
    completing. After the steps completed, a user whose last connection was lost to the
    network (not logged out) may reconnect within ``reconnect_window`` (default 2 minutes).
    Durations are ``timedelta``s or seconds."""

    def __new__(
        cls,
        *,
        grace: _Duration | None = None,
        max_build_duration: _Duration | None = None,
        finish_if_unused_after: _Duration | None = None,
        reconnect_window: _Duration | None = None,
    ) -> Policy:
        """A policy; omitted durations take the defaults. Raises ``InvalidInputError`` for a
        negative or inconsistent one."""
    @property
    def grace(self) -> timedelta:
        """How long access lasts after the build steps complete."""
    @property
    def max_build_duration(self) -> timedelta:
        """Access never lasts past this, from the build's start."""
    @property
    def finish_if_unused_after(self) -> timedelta | None:
        """Ends access this long after the steps completed if nobody connected (None: never)."""
    @property
    def reconnect_window(self) -> timedelta:
        """After the steps completed, how long the session waits for a user whose last
        connection was lost (not logged out) to come back, never past the deadline; nobody
        back in time ends it as ``connection_lost``. Zero ends it at the loss."""
    def describe(self) -> str:
        """The rules in words, for any build under this policy: "until 20 minutes after the
        build steps complete, and never more than 2 hours after the build started"."""

@final
class Builder:
    """Where a build's machine is and what the gateway may reach on it: users may reach
    exactly ``address``, on ``ssh_port`` and ``extra_ports``, and nothing else."""

    def __new__(
        cls,
        address: str,
        *,
        ssh_port: int = 22,
        extra_ports: Sequence[int] = ...,
        vnc_port: int | None = None,
        user: str | None = None,
        reverse_tunnel: bool = False,
        host_key: str | None = None,
    ) -> Builder:
        """A builder at ``address``, an IP address (not a name, which DNS could redirect);
        ``InvalidInputError`` otherwise."""
    @property
    def address(self) -> str:
        """The builder's private IP address."""
    @property
    def ssh_port(self) -> int:
        """Its sshd port (default 22)."""
    @property
    def extra_ports(self) -> list[int]:
        """Further ports users may reach through the gateway (none by default)."""
    @property
    def vnc_port(self) -> int | None:
        """The builder's VNC server port, if users get VNC. The gateway gives the user a port
        of its own and logs in here with the builder's password."""
    @property
    def user(self) -> str:
        """The account users log in to on the builder (default ``builder``)."""
    @property
    def reverse_tunnel(self) -> bool:
        """Reached only through its agent's reverse tunnel (``run_agent``): the gateway never
        dials ``address``."""
    @property
    def host_key(self) -> str | None:
        """The builder sshd's host key (``ssh-ed25519 AAAA...``), pinned by the scripts;
        without it, scripts trust the builder's key on first use."""

@final
class ManualClock:
    """A clock that only moves when told to: for tests of the time rules
    (``Authority(clock=...)``)."""

    def __new__(cls, start: datetime) -> ManualClock:
        """A clock showing ``start`` (an aware ``datetime``)."""
    def advance(self, by: _Duration) -> None:
        """Moves the clock forward by ``by``."""
    def set(self, to: datetime) -> None:
        """Sets the clock to ``to``."""
    def now(self) -> datetime:
        """What the clock shows."""

@final
class Credentials:
    """One build's credentials, from ``Authority.issue()``. The private keys and the VNC
    passwords come only from the explicit ``*_private_key_openssh()``, ``vnc_password()`` and
    ``builder_vnc_password()`` calls: never in ``repr()``, ``str()``, errors, or pickles
    (these objects cannot be pickled)."""

    @property
    def build_id(self) -> str:
        """The build these credentials are for."""
    @property
    def username(self) -> str:
        """The username to give the gateway, e.g. ``ra-k3v9x0c2m1qz``."""
    @property
    def public_key(self) -> str:
        """The user's public key line (``ssh-ed25519 AAAA...``)."""
    @property
    def fingerprint(self) -> str:
        """The key's ``SHA256:`` fingerprint, as ``ssh-keygen -lf`` prints it."""
    @property
    def agent_username(self) -> str | None:
        """The builder agent's username, for builds reached by a reverse tunnel."""
    @property
    def agent_fingerprint(self) -> str | None:
        """The builder agent's key fingerprint, for builds reached by a reverse tunnel."""
    @property
    def certificate(self) -> str | None:
        """The OpenSSH user certificate of the build's key, when the authority has a user CA
        and the build a builder (public; the scripts use it)."""
    @property
    def builder_host_certificate(self) -> str | None:
        """The builder's host certificate, when the authority has a host CA and the request
        gave the builder's host key: the builder sshd's ``HostCertificate``."""
    def authorized_keys_line(self) -> str:
        """The line to put in the builder's ``authorized_keys``."""
    def authorized_keys_line_restricted(self) -> str:
        """The same line with OpenSSH restrictions (no agent or X11 forwarding, no port
        forwarding)."""
    def private_key_openssh(self) -> str:
        """The user's private key in OpenSSH format. A secret: hand it only to the user."""
    def agent_private_key_openssh(self) -> str | None:
        """The builder agent's private key (reverse-tunnel builds), in OpenSSH format. A
        secret."""
    def vnc_password(self) -> str:
        """The VNC password the user types. A secret."""
    def builder_vnc_password(self) -> str | None:
        """The builder's own VNC password (or macOS account password), generated for this
        build unless one was supplied: install it on the builder. A secret; None without
        VNC."""
    def __reduce__(self) -> NoReturn:
        """Refused: credentials hold secrets and cannot be pickled."""

@final
class Session:
    """A snapshot of one build's remote access session (``await authority.session(id)``)."""

    @property
    def build_id(self) -> str:
        """The build."""
    @property
    def phase(self) -> Phase:
        """``steps_running``, ``steps_completed`` or ``ended``."""
    @property
    def policy(self) -> Policy:
        """The build's time rules."""
    @property
    def builder(self) -> Builder | None:
        """The build's machine, if the request named one."""
    @property
    def started_at(self) -> datetime:
        """When the build started."""
    @property
    def steps_completed_at(self) -> datetime | None:
        """When its steps completed, once they have."""
    @property
    def deadline(self) -> datetime:
        """When access ends at the latest, as things stand: ``max_end`` while the steps run,
        then the grace period's end (or ``max_end``, if earlier)."""
    @property
    def max_end(self) -> datetime:
        """The latest end whatever happens: the build's start plus its maximum duration."""
    @property
    def reconnect_by(self) -> datetime | None:
        """While the session waits for a user whose last connection was lost (after the
        steps completed): until when the same credentials work again. None otherwise."""
    @property
    def access_rule(self) -> str:
        """The build's rule in words, with its own numbers: "until 20 minutes after the build
        steps complete, and never after 12:00 UTC", then the actual deadline once the steps
        completed, a reconnect window, or how it ended."""
    @property
    def is_ended(self) -> bool:
        """Whether access is over for good."""
    @property
    def end_reason(self) -> str | None:
        """Why the session ended, in words, if it has."""
    @property
    def end_reason_code(self) -> EndReasonCode | None:
        """Why the session ended, as a stable code, if it has."""
    @property
    def ended_at(self) -> datetime | None:
        """When the session ended, if it has."""
    @property
    def vnc_port(self) -> int | None:
        """The gateway port for this build's VNC, if it has one."""
    @property
    def ever_connected(self) -> bool:
        """Whether a user ever connected."""
    @property
    def live_connections(self) -> list[tuple[str, ConnectionProtocol]]:
        """``(connection id, "ssh" | "vnc")`` for each live connection."""

@final
class Event:
    """Something that happened to a build's remote access, from a ``Subscription``."""

    @property
    def build_id(self) -> str:
        """The build."""
    @property
    def at(self) -> datetime:
        """When it happened (by the authority's clock)."""
    @property
    def kind(self) -> EventKind:
        """What happened. ``deadline_changed``: the steps completed and the deadline moved
        (``deadline``); ``dropped``: a connection was lost to the network, not closed by its
        user (after the steps, the last one opens the reconnect window); ``connection_lost``:
        nobody reconnected in time, access ended. ``lagged``: this subscription fell behind
        and missed ``dropped`` events (see ``Authority(event_queue=)``)."""
    @property
    def reason(self) -> str:
        """Why, in words for people and logs. Never contains a secret."""
    @property
    def connection_id(self) -> str | None:
        """The connection, for ``connected``, ``disconnected`` and ``dropped`` events."""
    @property
    def protocol(self) -> ConnectionProtocol | None:
        """``ssh`` or ``vnc``, for ``connected``, ``disconnected`` and ``dropped`` events."""
    @property
    def dropped(self) -> int | None:
        """How many events this subscription missed, for ``lagged`` events (not the
        ``dropped`` kind, a lost connection: that one has ``connection_id``)."""
    @property
    def deadline(self) -> datetime | None:
        """The new deadline, for ``deadline_changed`` events."""
    def to_dict(self) -> EventDict:
        """The event as a dict of JSON-safe values (``at`` in RFC 3339)."""

@final
class FleetEvents:
    """The fleet's event log from a place in it: an async iterator of ``(id, Event)``."""

    def __aiter__(self) -> FleetEvents:
        """This iterator."""
    def __anext__(self) -> Awaitable[tuple[str, Event]]:
        """The next event and its id, waiting for one; raises ``StoreUnavailableError``
        when the store cannot be read (iterate again: the place is kept)."""

@final
class Subscription:
    """The queue behind ``remote_access.Subscription`` (use that one: ``async for``)."""

    def wait(self) -> Awaitable[None]:
        """Resolves once an event is ready for ``try_next()``; raises ``StopAsyncIteration``
        once closed and nothing is left."""
    def try_next(self) -> Event | None:
        """The next event if one is ready, else None."""
    def close(self) -> None:
        """Unsubscribes: a waiting or later ``wait()`` raises ``StopAsyncIteration``."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""

@final
class Authority:
    """Issues, verifies and revokes per-build credentials and enforces each build's time
    rules. The store is in memory unless ``redis_url`` names a Redis that several gateways
    share. Options:

    - ``policy``: the time rules of builds whose request names none;
    - ``tombstone_retention``: how long a revoked or expired credential stays refused
      (default 30 days);
    - ``vnc_ports``: the gateway ports users' VNC clients connect to, one per live session
      with VNC (none by default);
    - ``clock``: a ``ManualClock`` for tests (not with ``redis_url``);
    - ``redis_url``, ``redis_key_prefix``: a shared Redis (the URL is treated as a secret):
      ``redis://``, ``rediss://`` (TLS) or ``redis+sentinel://host:port,.../master/db``;
    - ``redis_tls_ca``: for ``rediss://``, the CA certificates (PEM text) that sign Redis's
      certificate, instead of the system's roots;
    - ``redis_tls_client``: for ``rediss://`` to a Redis that asks for client certificates,
      ``(certificate_chain_pem, private_key_pem)``;
    - ``redis_min_replicas``: replicas that must confirm each revocation and be in sync for
      logins to go on (default: 1 once a replica has been seen, else 0);
    - ``max_store_outage``: how long the store may be out of reach before every live
      connection is cut (default 30 s);
    - ``event_queue``: how many events each subscription may hold unread (default 10,000);
    - ``user_ca``: an ``SshCa`` that signs each build's key (``Credentials.certificate``), so
      builders trust it once (``TrustedUserCAKeys``); it needs
      ``certificate_source_addresses``, the addresses or CIDR blocks builders see the gateways
      connect from (each certificate's ``source-address``, so it opens no builder from another);
    - ``host_ca``: an ``SshCa`` that signs builders' host keys (``certify_host``).
    """

    def __new__(
        cls,
        *,
        policy: Policy | None = None,
        tombstone_retention: _Duration | None = None,
        vnc_ports: Sequence[int] = ...,
        clock: ManualClock | None = None,
        redis_url: str | None = None,
        redis_key_prefix: str | None = None,
        redis_tls_ca: str | None = None,
        redis_tls_client: tuple[str, str] | None = None,
        redis_min_replicas: int | None = None,
        max_store_outage: _Duration | None = None,
        event_queue: int | None = None,
        user_ca: SshCa | None = None,
        certificate_source_addresses: Sequence[str] = ...,
        host_ca: SshCa | None = None,
    ) -> Authority:
        """An authority; omitted options take the core's defaults."""
    @property
    def policy(self) -> Policy:
        """The default time rules."""
    @property
    def vnc_ports(self) -> list[int]:
        """The gateway's VNC ports."""
    @property
    def tombstone_retention(self) -> timedelta:
        """How long revoked and expired credentials stay refused."""
    @property
    def max_store_outage(self) -> timedelta:
        """How long the store may be out of reach before live connections are cut."""
    @property
    def event_queue(self) -> int:
        """How many events each subscription may hold unread."""
    def now(self) -> datetime:
        """The authority's clock."""
    def subscribe(self) -> _PublicSubscription:
        """Every event from now on: ``async for event in authority.subscribe()``."""
    def fleet_events(self, after: str | None = None) -> Awaitable[FleetEvents]:
        """The events of every authority on this store (the whole fleet with Redis), oldest
        first: ``async for event_id, event in await authority.fleet_events(after)``. After the
        event with id ``after`` (keep the last id handled, to resume after a restart), or with
        ``None`` those appended from now on. Authorities append their events as their
        housekeeping runs (a gateway runs its own); ``lagged`` events are not in the log."""
    def issue(
        self,
        build_id: str,
        *,
        trigger: Trigger,
        remote_access_enabled: bool,
        started_at: datetime | None = None,
        policy: Policy | None = None,
        builder: Builder | None = None,
        builder_vnc_password: str | None = None,
        builder_vnc_username: str | None = None,
    ) -> Awaitable[Credentials]:
        """Issues credentials for a build. ``trigger`` and ``remote_access_enabled`` have no
        defaults: the platform states them for every build (only ``manual`` builds with
        remote access enabled get credentials). Leave ``builder_vnc_password`` unset to have
        the builder's own VNC password generated per build."""
    def steps_completed(self, build_id: str) -> Awaitable[None]:
        """Records that the build's steps completed: the grace period starts."""
    def build_finished(self, build_id: str) -> Awaitable[None]:
        """Records that the platform finished the build itself: access ends."""
    def cancel(self, build_id: str) -> Awaitable[None]:
        """Records that the build was cancelled: access ends."""
    def revoke(self, build_id: str, reason: str) -> Awaitable[None]:
        """Revokes the build's credentials now and cuts its live connections."""
    def certify_host(self, host_key: str, addresses: Sequence[str], valid_for: _Duration) -> str:
        """Signs a builder's host key (``ssh-ed25519 AAAA...``) with the host CA for
        ``addresses`` (IP addresses), valid for ``valid_for``: the builder sshd's
        ``HostCertificate``."""
    def revoked_keys(self) -> Awaitable[bytes]:
        """A KRL (OpenSSH key revocation list) of the keys of ended builds whose certificates
        are still valid, for the builder sshd's ``RevokedKeys``."""
    def session(self, build_id: str) -> Awaitable[Session]:
        """The build's session."""
    def connection_info(
        self, build_id: str, host_key: HostKey, options: ScriptOptions
    ) -> Awaitable[_PublicConnectionInfo]:
        """The build's connection info as of now, in one call, from what the authority keeps
        (no ``Credentials`` needed; the scripts still need them): the same dict as
        ``ConnectionInfo(credentials, session, host_key, options)``. Raises
        ``UnknownBuildError`` for a build without a session."""
    def verify_ssh(self, username: str, public_key: str) -> Awaitable[str]:
        """Checks an SSH login; resolves to the build id it belongs to, or raises
        ``AccessDeniedError``."""
    def verify_vnc(self, build_id: str, password: str) -> Awaitable[None]:
        """Checks a VNC password for a build, or raises ``AccessDeniedError``."""
    def connected(self, build_id: str, protocol: ConnectionProtocol) -> Awaitable[LiveConnection]:
        """Records a user connection your own transport carries. Raises
        ``SessionEndedError`` once access is over."""
    def run_housekeeping(self) -> Awaitable[None]:
        """Enforces the deadlines, follows the store and purges until cancelled: for
        platforms that carry connections themselves; a running gateway does this by
        itself."""
    def expire_due(self) -> Awaitable[int]:
        """Ends every session whose deadline has passed; resolves to how many."""
    def next_deadline(self) -> Awaitable[datetime | None]:
        """The earliest deadline of any live session."""
    def purge(self) -> Awaitable[int]:
        """Forgets tombstones older than the retention; resolves to how many."""

@final
class LiveConnection:
    """A user connection the platform carries itself (``authority.connected()``): call
    ``disconnect()`` when its user closes it, ``lost()`` when the network loses it;
    ``closed()`` resolves when access ends and the connection must be closed. One garbage
    collected without a report is recorded as lost (never as a logout)."""

    @property
    def build_id(self) -> str:
        """The build."""
    @property
    def id(self) -> str:
        """The connection's id, as events report it."""
    @property
    def protocol(self) -> ConnectionProtocol:
        """``ssh`` or ``vnc``."""
    @property
    def is_cut(self) -> bool:
        """Whether access has ended for this connection."""
    def closed(self) -> Awaitable[None]:
        """Resolves when access ends (revoke, deadline, cancel): close the connection then.
        It also resolves, with ``is_cut`` false, once the connection's end is recorded."""
    def disconnect(self) -> Awaitable[None]:
        """Records that the user left (after the build steps, the last one leaving is a
        logout, which ends access and asks to finish the build). Only the first report
        counts."""
    def lost(self) -> Awaitable[None]:
        """Records that the connection was lost to the network (a reset, a timeout), not
        closed by its user: after the build steps, the last one lost opens the policy's
        ``reconnect_window`` (a ``dropped`` event, ``Session.reconnect_by``), and the session
        ends as ``connection_lost`` only if nobody reconnects in time. Only the first report
        counts."""
    def detach(self) -> Awaitable[None]:
        """Records that the connection went away because its carrier stopped (not a
        logout). Only the first report counts."""

@final
class HostKey:
    """The gateway's SSH host key, which users pin. Persist it (``to_openssh()``) so that it
    survives restarts."""

    @staticmethod
    def generate() -> HostKey:
        """A new Ed25519 host key."""
    @staticmethod
    def from_openssh(text: str) -> HostKey:
        """A key from its OpenSSH private key text (as written by ``to_openssh()`` or
        ``ssh-keygen``)."""
    def to_openssh(self) -> str:
        """The private key in OpenSSH format. A secret: store it like one."""
    @property
    def public_key(self) -> str:
        """The public key line (``ssh-ed25519 AAAA...``), for ``known_hosts``."""
    @property
    def fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh`` prints it."""
    def __reduce__(self) -> NoReturn:
        """Refused: a host key cannot be pickled; persist ``to_openssh()`` instead."""

@final
class SshCa:
    """An SSH certificate authority key (Ed25519): ``Authority(user_ca=...)`` signs each
    build's key with it, ``Authority(host_ca=...)`` builders' host keys. Persist it
    (``to_openssh()``, a secret: it opens every builder that trusts it)."""

    @staticmethod
    def generate() -> SshCa:
        """A new Ed25519 CA key."""
    @staticmethod
    def from_openssh(text: str) -> SshCa:
        """A CA key from its OpenSSH private key text (Ed25519, unencrypted)."""
    def to_openssh(self) -> str:
        """The private key in OpenSSH format. A secret: store it like one."""
    @property
    def public_key(self) -> str:
        """The public key line (``ssh-ed25519 AAAA...``): for ``TrustedUserCAKeys`` (a user
        CA) or ``ScriptOptions(builder_host_ca=...)`` (a host CA)."""
    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` of the public key."""
    def __reduce__(self) -> NoReturn:
        """Refused: a CA key cannot be pickled; persist ``to_openssh()`` instead."""

@final
class TlsIdentity:
    """The gateway's TLS certificate chain and private key for its VNC ports (VeNCrypt
    ``X509Vnc`` and ``wss://``). Users check it by its SHA-256 ``fingerprint``, which the
    connection info carries (``ScriptOptions(vnc_tls_fingerprint=...)``)."""

    @staticmethod
    def generate(names: list[str]) -> TlsIdentity:
        """A fresh self-signed certificate (ECDSA P-256) for ``names`` (host names or IP
        addresses, as users type them), for a quickstart or a test. Persist it
        (``certificate_pem``, ``private_key_pem()``) so that it survives restarts."""
    @staticmethod
    def from_pem(certificate_chain_pem: str, private_key_pem: str) -> TlsIdentity:
        """A certificate chain (PEM, leaf first) and the leaf's private key (PEM, unencrypted
        PKCS#8, SEC1 or PKCS#1); a key that does not fit the certificate is refused with
        ``InvalidInputError``."""
    @property
    def certificate_pem(self) -> str:
        """The certificate chain as PEM: public, for users' clients to trust."""
    def private_key_pem(self) -> str:
        """The private key as PEM. A secret: store it like one."""
    @property
    def fingerprint(self) -> str:
        """The leaf certificate's SHA-256 fingerprint, ``AB:CD:...``."""
    def __reduce__(self) -> NoReturn:
        """Refused: a TLS identity cannot be pickled; persist its PEM texts instead."""

@final
class Gateway:
    """The SSH gateway (and the VNC proxy on the authority's ``vnc_ports``). Options are
    keyword arguments with the core's defaults:

    - ``host_key``: the key users pin (default: a new one at every start; persist one);
    - ``pre_auth_timeout`` (30 s), ``auth_rejection_delay`` (1 s), ``max_auth_attempts`` (6),
      ``silent_timeout`` (5 s): how long and how often a connection may try to log in;
    - ``max_unauthenticated`` (10,000), ``max_unauthenticated_per_ip`` (32),
      ``max_unauthenticated_per_prefix`` (256): connections waiting to log in;
    - ``failures_before_backoff`` (20), ``new_connections_per_second`` (10),
      ``new_connections_burst`` (20): backoff and rate limits per source;
    - ``max_connections_per_build`` (16), ``max_channels_per_build`` (64): per build;
    - ``keepalive_interval`` (30 s), ``window_size`` (8 MiB), ``dial_timeout`` (10 s),
      ``builder_stall_timeout`` (60 s);
    - ``worker_threads`` (0): N serves each connection wholly on one of N threads of the
      gateway's own, which costs about a fifth less CPU in bulk transfers than the package's
      shared runtime (at most 1,024; 0 uses the package's runtime);
    - ``kex_algorithms``, ``ciphers``, ``macs``: SSH algorithm names offered, most preferred
      first (an unknown name raises ``InvalidInputError`` listing the supported ones);
    - ``vnc_tls`` (a ``TlsIdentity``), ``vnc_require_encryption`` (False),
      ``vnc_websocket`` (True), ``vnc_websocket_origins`` (any): the VNC ports;
    - ``reuse_port`` (False): bind the ports with ``SO_REUSEPORT``, so that another gateway
      can listen on them too, to replace this one without downtime (``RunningGateway.drain``;
      set ``net.ipv4.tcp_migrate_req=1`` as well);
    - ``metrics_address`` (none): ``"ADDRESS:PORT"`` where plain HTTP serves ``GET /metrics``
      (``metrics_text()``) and ``GET /healthz`` (200 while ``ready()``, else 503); keep it
      private.
    """

    def __new__(
        cls,
        authority: Authority,
        *,
        host_key: HostKey | None = None,
        pre_auth_timeout: _Duration | None = None,
        auth_rejection_delay: _Duration | None = None,
        max_auth_attempts: int | None = None,
        max_unauthenticated: int | None = None,
        max_unauthenticated_per_ip: int | None = None,
        max_unauthenticated_per_prefix: int | None = None,
        silent_timeout: _Duration | None = None,
        failures_before_backoff: int | None = None,
        new_connections_per_second: int | None = None,
        new_connections_burst: int | None = None,
        max_connections_per_build: int | None = None,
        max_channels_per_build: int | None = None,
        keepalive_interval: _Duration | None = None,
        worker_threads: int | None = None,
        window_size: int | None = None,
        dial_timeout: _Duration | None = None,
        builder_stall_timeout: _Duration | None = None,
        kex_algorithms: list[str] | None = None,
        ciphers: list[str] | None = None,
        macs: list[str] | None = None,
        vnc_tls: TlsIdentity | None = None,
        vnc_require_encryption: bool | None = None,
        vnc_websocket: bool | None = None,
        vnc_websocket_origins: list[str] | None = None,
        reuse_port: bool | None = None,
        metrics_address: str | None = None,
    ) -> Gateway:
        """A gateway for ``authority``; nothing is bound until ``start()``."""
    @property
    def host_key(self) -> HostKey:
        """The key users pin."""
    @property
    def authority(self) -> Authority:
        """The authority it asks."""
    def stats(self) -> GatewayStats:
        """What the gateway holds now."""
    def metrics_text(self) -> str:
        """What the gateway has counted, as Prometheus text (what ``metrics_address`` serves
        at ``/metrics``), for serving from the application's own web server."""
    def ready(self) -> bool:
        """Whether the gateway should get new connections: its store answers and it is not
        draining (what ``metrics_address`` serves at ``/healthz``)."""
    def start(self, addr: str) -> GatewayStart:
        """Binds ``addr`` (e.g. ``"0.0.0.0:2222"``; the VNC ports on the same address) and
        serves in the background. ``running = await gateway.start(addr)``: serves until
        ``await running.stop()`` or the end of the process (dropping ``running`` does not
        stop it). ``async with gateway.start(addr) as running:`` stops it on leaving the
        block."""

@final
class GatewayStart:
    """What ``Gateway.start(addr)`` returns: ``await`` it for a ``RunningGateway``, or use it
    with ``async with`` to stop the gateway on leaving the block. Like a coroutine, it starts
    the gateway once, when awaited or entered."""

    def __await__(self) -> Generator[Any, Any, RunningGateway]:
        """Starts the gateway; the result serves until stopped or the end of the process."""
    def __aenter__(self) -> Awaitable[RunningGateway]:
        """Starts the gateway."""
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> Awaitable[None]:
        """Stops the gateway and waits until it has stopped."""

@final
class RunningGateway:
    """A gateway serving in the background, until ``await running.stop()`` or the end of the
    process: dropping it does not stop it (as with ``asyncio.start_server``). ``async with
    running:`` stops it on leaving the block."""

    @property
    def host(self) -> str:
        """The host it listens on."""
    @property
    def port(self) -> int:
        """The port it listens on (useful after binding port 0)."""
    @property
    def serving(self) -> bool:
        """Whether it serves: false once ``stop()`` was called."""
    def stop(self) -> Awaitable[None]:
        """Stops accepting, closes every connection and waits until all are gone. Live
        sessions are detached, not ended: a gateway started again on the same authority
        serves them. Stopping again does nothing."""
    def drain(self, timeout: _Duration) -> Awaitable[None]:
        """Replaces this gateway without downtime (with ``reuse_port=True`` and another
        gateway already on the same ports): closes its ports at once, serves its live
        connections until they end or ``timeout`` passes, then lets the rest go as ``stop()``
        does. Cancelling the drain stops the gateway at once; draining a stopped gateway does
        nothing."""
    def __aenter__(self) -> Awaitable[RunningGateway]:
        """Returns this gateway."""
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> Awaitable[None]:
        """Stops the gateway and waits until it has stopped."""

@final
class ScriptOptions:
    """Where users reach the gateway, and how the scripts behave."""

    def __new__(
        cls,
        gateway_host: str,
        gateway_port: int = 22,
        *,
        build_dir: str | None = None,
        vnc_tls_fingerprint: str | None = None,
        vnc_require_encryption: bool | None = None,
        vnc_websocket: bool | None = None,
        builder_host_ca: str | None = None,
    ) -> ScriptOptions:
        """Options for a gateway reached at ``gateway_host:gateway_port``."""
    @property
    def gateway_host(self) -> str:
        """The gateway's public host name or address, as users reach it."""
    @property
    def gateway_port(self) -> int:
        """The gateway's public port (default 22)."""
    @property
    def build_dir(self) -> str:
        """The directory the login shell starts in: ``$NAME`` for an environment variable on
        the builder (default ``$FCI_BUILD_DIR``), or a path."""
    @property
    def vnc_tls_fingerprint(self) -> str | None:
        """The SHA-256 fingerprint of the gateway's VNC TLS certificate, when it has one:
        users are told to choose VeNCrypt, and browsers get a ``wss://`` URL."""
    @property
    def vnc_require_encryption(self) -> bool:
        """The gateway refuses unencrypted VNC (default false): users are not offered the
        plain path."""
    @property
    def vnc_websocket(self) -> bool:
        """The gateway serves VNC over WebSocket (default true): the info carries the URL for
        noVNC."""
    @property
    def builder_host_ca(self) -> str | None:
        """The public key of the CA that signs builders' host keys, if builders have host
        certificates: the scripts trust it for the builder's address instead of a pinned key."""

@final
class ConnectionInfo:
    """The native connection info behind ``remote_access.ConnectionInfo`` (use that one: a
    ``dict`` with the core's JSON keys)."""

    def __new__(
        cls, credentials: Credentials, session: Session, host_key: HostKey, options: ScriptOptions
    ) -> ConnectionInfo:
        """The info for a build's credentials and session."""
    def refresh(self, session: Session) -> None:
        """Brings the time fields up to date with ``session`` (the same build's); unchanged
        if it raises."""
    def to_json(self) -> str:
        """The info as pretty JSON."""
    def known_hosts(self) -> str:
        """The ``known_hosts`` lines that pin the gateway (and the builder, when known)."""
    def ssh_config(self, identity_file: str, known_hosts_file: str) -> str:
        """An ``ssh_config`` block for users who keep the key and ``known_hosts()`` in
        files."""
    def ssh_config_with_certificate(
        self, identity_file: str, certificate_file: str, known_hosts_file: str
    ) -> str:
        """The same for a key with a certificate in ``certificate_file``, which ``ssh``
        presents to the builder only."""
    def posix_script(self, credentials: Credentials) -> str:
        """A POSIX ``sh`` script that opens a shell in the build directory (or runs its
        arguments there). It contains the private key: a secret for the user only."""
    def powershell_script(self, credentials: Credentials) -> str:
        """The same for PowerShell on Windows. A secret too."""
    def vnc_instructions(self, credentials: Credentials) -> str | None:
        """What to enter in a VNC client, password included (a secret); None without VNC."""

def run_agent(
    gateway: str,
    gateway_host_key: str,
    username: str,
    private_key: str,
    *,
    local_host: str = "127.0.0.1",
    ports: Sequence[int] = ...,
    min_backoff: _Duration | None = None,
    max_backoff: _Duration | None = None,
    dial_timeout: _Duration | None = None,
) -> Awaitable[AgentExit]:
    """Runs a builder's agent: dials out to the gateway (``host:port``, pinned by
    ``gateway_host_key``) with the build's agent credential and carries the build's reverse
    tunnel to ``local_host`` on ``ports`` (default ``[22]``), reconnecting with backoff.
    Resolves to why it returned: ``session_ended``, ``refused`` or ``replaced``. Cancel the
    awaitable (e.g. ``task.cancel()``) to stop it."""

def vnc_password_file(password: str) -> bytes:
    """The 8-byte VNC password file (``vncpasswd`` format) for a builder's VNC server."""

def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The 16-byte answer to a VNC Authentication challenge (for clients and tests)."""

def cli_main(args: list[str]) -> int:
    """Runs the ``remote-access`` command line with ``args`` (without the program name) and
    returns its exit code: 0 done, 1 failed, 2 a usage error or refused input, 3 the build's
    access has ended, 4 no such build. Blocks until the command ends (``gateway`` runs until
    Ctrl-C or SIGTERM); ``python -m remote_access`` calls it."""

def reset_log_cache() -> None:
    """Makes the package's loggers ask ``logging`` for their levels again. The level of each
    ``remote_access.*`` logger is cached on its first record, so that records nobody wants
    cost nothing; call this after changing a level or a handler once the package has
    logged."""

def _error_for_test(code: str) -> BaseException:
    """The exception raised for a core error of kind ``code``, for tests of the mapping."""

def _shutdown() -> None:
    """Registered with ``atexit``: stops the runtime's threads (and the log thread) before
    Python finalizes."""
