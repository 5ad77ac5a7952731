"""The fixed sets of strings the API takes and returns, as ``Literal`` types, and the fixed
shapes of the dicts it returns, as ``TypedDict``s.

Each set is the core's (``remote-access-core``), spelled as the core spells it; at run time
the values are plain ``str``. ``tests/test_types.py`` checks each set against the core's
source, and that ``mypy --strict`` refuses a value outside it (``trigger="manul"``).
"""

from __future__ import annotations

from typing import Literal, TypedDict

Trigger = Literal["manual", "webhook", "scheduled", "api"]
"""How a build was started (``Authority.issue(trigger=...)``); only ``manual`` builds get
remote access."""

EventKind = Literal[
    "issued",
    "steps_completed",
    "deadline_changed",
    "connected",
    "disconnected",
    "dropped",
    "revoked",
    "expired",
    "logged_out",
    "connection_lost",
    "finish_build",
    "refused",
    "tunnel_registered",
    "guessing",
    "store_unreachable",
    "lagged",
]
"""What an ``Event`` reports (``Event.kind``)."""

Phase = Literal["steps_running", "steps_completed", "ended"]
"""Where a session is in its life (``Session.phase``)."""

EndReasonCode = Literal[
    "grace_elapsed",
    "max_duration_reached",
    "nobody_connected",
    "logged_out",
    "connection_lost",
    "revoked",
    "cancelled",
    "build_finished",
]
"""Why a session ended, as a stable code (``Session.end_reason_code``,
``SessionEndedError.end_reason_code``)."""

DenialReason = Literal["unknown_user", "wrong_key", "wrong_password", "revoked"]
"""Why a credential was refused (``AccessDeniedError.reason``)."""

ConnectionProtocol = Literal["ssh", "vnc"]
"""The kind of a user connection (``Event.protocol``, ``LiveConnection.protocol``,
``Authority.connected(protocol=...)``)."""

ErrorCode = Literal[
    "not_manually_triggered",
    "remote_access_disabled",
    "invalid_input",
    "build_exists",
    "unknown_build",
    "session_ended",
    "access_denied",
    "store_unavailable",
    "no_capacity",
    "host_key_mismatch",
    "io",
    "contention",
    "internal",
    "key_material",
    "forked",
    "shut_down",
]
"""``RemoteAccessError.code``: the core's error codes, plus the Python package's own
``forked`` (used in a process forked after the package started its threads) and ``shut_down``
(used after the interpreter began to exit). Errors of code ``io`` are raised as ``OSError``."""

AgentExit = Literal["session_ended", "refused", "replaced", "stopped"]
"""Why ``run_agent`` returned."""


class GatewayStats(TypedDict):
    """What a gateway holds now (``Gateway.stats()``)."""

    ssh_connections: int
    """SSH connections being served (authenticated or not)."""
    vnc_connections: int
    """VNC connections being served (in the handshake or spliced)."""
    unauthenticated: int
    """Connections of either kind that have not authenticated yet."""
    builder_channels: int
    """Connections to builders that SSH users opened (``direct-tcpip``)."""
    addresses_with_failures: int
    """Source prefixes (/24, /64) with recent failed logins being remembered."""
    evicted: int
    """Unauthenticated connections closed to make room for a newcomer, since the start."""
    rate_limited: int
    """New connections closed at once because their source opened them too fast
    (``new_connections_per_second``), since the start."""


class EventDict(TypedDict):
    """An ``Event`` as JSON-safe values (``Event.to_dict()``)."""

    build_id: str
    at: str
    """RFC 3339."""
    kind: EventKind
    reason: str
    connection_id: str | None
    """For ``connected``, ``disconnected`` and ``dropped``."""
    protocol: ConnectionProtocol | None
    """For ``connected``, ``disconnected`` and ``dropped``."""
    dropped: int | None
    """For ``lagged``: how many events were missed."""
    deadline: str | None
    """For ``deadline_changed``: the new deadline, RFC 3339."""
