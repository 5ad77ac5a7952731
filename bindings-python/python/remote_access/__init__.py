"""Temporary, per-build SSH and VNC access to CI builders through a public gateway.

The Rust core (``remote-access-core``) does the work; this package exposes it to Python with
the same names and behaviour. Every awaitable runs on the caller's asyncio loop.

Logs: the core's log lines are ``logging`` records under the ``remote_access`` logger
(``remote_access.gateway.ssh.handler`` says why a login was refused; libraries inside the
extension, such as russh, log under ``remote_access.deps``). Levels down to DEBUG are
forwarded. A logger's level is cached on its first record: after changing levels or handlers
later, call ``reset_log_cache()``.

Types: the fixed sets of strings (``Trigger``, ``EventKind``, ``Phase``, ...) are ``Literal``
types, for annotations and for type checkers to catch a typo.
"""

from __future__ import annotations

import json

from remote_access import _native
from remote_access._native import ConnectionInfo as _NativeConnectionInfo
from remote_access._native import (
    AccessDeniedError,
    Authority,
    Builder,
    BuildExistsError,
    ContentionError,
    Credentials,
    Event,
    FleetEvents,
    Gateway,
    GatewayStart,
    HostKey,
    HostKeyMismatchError,
    InternalError,
    InvalidInputError,
    KeyMaterialError,
    LiveConnection,
    ManualClock,
    NoCapacityError,
    NotManuallyTriggeredError,
    Policy,
    RemoteAccessDisabledError,
    RemoteAccessError,
    RunningGateway,
    ScriptOptions,
    Session,
    SessionEndedError,
    SshCa,
    StoreUnavailableError,
    TlsIdentity,
    UnknownBuildError,
    __version__,
    reset_log_cache,
    run_agent,
    vnc_auth_response,
    vnc_password_file,
)
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

__all__ = [
    "AccessDeniedError",
    "AgentExit",
    "Authority",
    "Builder",
    "BuildExistsError",
    "ConnectionInfo",
    "ConnectionProtocol",
    "ContentionError",
    "Credentials",
    "DenialReason",
    "EndReasonCode",
    "ErrorCode",
    "Event",
    "EventDict",
    "EventKind",
    "FleetEvents",
    "Gateway",
    "GatewayStart",
    "GatewayStats",
    "HostKey",
    "HostKeyMismatchError",
    "InternalError",
    "InvalidInputError",
    "KeyMaterialError",
    "LiveConnection",
    "ManualClock",
    "NoCapacityError",
    "NotManuallyTriggeredError",
    "Phase",
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
    "Trigger",
    "UnknownBuildError",
    "__version__",
    "reset_log_cache",
    "run_agent",
    "vnc_auth_response",
    "vnc_password_file",
]


class ConnectionInfo(dict):  # type: ignore[type-arg]
    """Everything a client needs to connect, without secrets.

    A ``dict`` with the core's JSON fields (so ``json.dumps(info)`` works and a web UI gets
    the same snake_case keys as from Rust; Node's ``toJSON()`` has them in camelCase); the
    methods generate the scripts. The dict is a snapshot of the session when it was made:
    ``refresh(session)`` brings its time fields (``phase``, ``deadline``, ``reconnect_by``,
    ``end_reason``, ``access_rule``...) up to date, as does a new one from
    ``await authority.connection_info(...)``. Changing the dict by hand does not change what
    the methods produce.
    """

    def __init__(
        self,
        credentials: Credentials,
        session: Session,
        host_key: HostKey,
        options: ScriptOptions,
    ) -> None:
        native = _native.ConnectionInfo(credentials, session, host_key, options)
        super().__init__(json.loads(native.to_json()))
        self._native = native

    @classmethod
    def _from_native(cls, native: _NativeConnectionInfo) -> ConnectionInfo:
        # What `Authority.connection_info` resolves to: the same dict, from the core's info.
        info = cls.__new__(cls)
        dict.__init__(info, json.loads(native.to_json()))
        info._native = native
        return info

    def refresh(self, session: Session) -> None:
        """Brings the time fields up to date with ``session`` (the same build's, read later
        with ``await authority.session(build_id)``): the phase, the deadline once the steps
        completed, a reconnect window, the end. Raises ``InvalidInputError`` for another
        build's session, and then changes nothing."""
        self._native.refresh(session)
        self.clear()
        self.update(json.loads(self._native.to_json()))

    def to_json(self) -> str:
        """The info as pretty JSON."""
        return self._native.to_json()

    def known_hosts(self) -> str:
        """The ``known_hosts`` lines that pin the gateway (and the builder, when known)."""
        return self._native.known_hosts()

    def ssh_config(self, identity_file: str, known_hosts_file: str) -> str:
        """An ``ssh_config`` block for users who keep the key and ``known_hosts()`` in files."""
        return self._native.ssh_config(identity_file, known_hosts_file)

    def ssh_config_with_certificate(self, identity_file: str, certificate_file: str, known_hosts_file: str) -> str:
        """The same for a key with a certificate (``Credentials.certificate``) in
        ``certificate_file``, which ``ssh`` presents to the builder only."""
        return self._native.ssh_config_with_certificate(identity_file, certificate_file, known_hosts_file)

    def posix_script(self, credentials: Credentials) -> str:
        """A POSIX ``sh`` script that opens a shell in the build directory (or runs its
        arguments there). It contains the private key: a secret for the user only."""
        return self._native.posix_script(credentials)

    def powershell_script(self, credentials: Credentials) -> str:
        """The same for PowerShell on Windows. A secret too."""
        return self._native.powershell_script(credentials)

    def vnc_instructions(self, credentials: Credentials) -> str | None:
        """What to enter in a VNC client, password included (a secret); None without VNC."""
        return self._native.vnc_instructions(credentials)

    def __reduce__(self) -> tuple[type[dict], tuple[dict]]:  # type: ignore[type-arg]
        # Pickles (and copies) as the plain dict: the info holds no secret.
        return (dict, (dict(self),))


class Subscription:
    """The authority's events from the moment of subscribing: ``async for event in ...``.

    Each subscription has its own queue, so a slow reader slows nobody. The queue holds the
    authority's ``event_queue`` events (10,000 by default): a reader that falls further behind
    misses events, and one event of kind ``lagged`` (its ``dropped`` says how many) stands in
    their place, followed by the next ones in order. Cancelling a waiting
    ``__anext__`` (a timeout, ``task.cancel()``) loses no event and keeps the order: the event
    is taken off the queue here, on the event loop's thread, only once the wait is over.
    ``close()`` ends the iteration, also one that is waiting.
    """

    __slots__ = ("_queue",)

    def __init__(self, queue: _native.Subscription) -> None:
        self._queue = queue

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while (event := self._queue.try_next()) is None:
            await self._queue.wait()  # raises StopAsyncIteration once closed
        return event

    def try_next(self) -> Event | None:
        """The next event if one is ready, else None."""
        return self._queue.try_next()

    def close(self) -> None:
        """Unsubscribes: a waiting or later ``__anext__`` ends the iteration."""
        self._queue.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._queue.closed
