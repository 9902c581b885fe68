"""Whose a session is: separate namespaces for callers, platforms and addresses.

Every stored session has an owner string (``SessionMeta.principal``):

- a caller's name (an API key's name, a JWT ``sub``) for sessions made on ``/ws``
  or ``POST /sessions`` with authentication on;
- ``addr:<client address>`` with authentication off, so that the per-caller
  session cap also holds per address;
- ``platform:<kind>`` for the sessions a platform route makes
  (``SessionManager.open_keyed``); their ids start with ``<kind>_``.

Platform sessions are never a caller's own: the session API hides them from
everyone but an admin credential (``GATEWAY_ADMIN_KEYS``), and caller names that
could collide with an owner string of another namespace are refused.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import HTTPConnection

#: Platform adapters that own keyed sessions (the ``kind`` of ``open_keyed``).
PLATFORM_KINDS: Final = frozenset({"twilio", "retell", "layercode"})
#: The kind of a session a caller made (on ``/ws`` or ``POST /sessions``).
CLIENT_KIND: Final = "client"

PLATFORM_PREFIX: Final = "platform:"
ADDRESS_PREFIX: Final = "addr:"
#: Names no caller may have: the platforms (the owner string of their sessions
#: before namespaces existed), the admin role, and anything shaped like an owner
#: string of another namespace.
RESERVED_NAMES: Final = PLATFORM_KINDS | {"openai", "admin", "platform", "system", CLIENT_KIND}
_RESERVED_PREFIXES: Final = (PLATFORM_PREFIX, ADDRESS_PREFIX)


def platform_principal(kind: str) -> str:
    """The owner string of a platform's sessions."""
    return PLATFORM_PREFIX + kind


def address_principal(conn: HTTPConnection) -> str:
    """The owner string of a session made with authentication off: the client's
    address (behind a proxy listed in ``FORWARDED_ALLOW_IPS``, its
    ``X-Forwarded-For``)."""
    return ADDRESS_PREFIX + (conn.client.host if conn.client else "unknown")


def is_reserved(name: str) -> bool:
    """Whether ``name`` may not be a caller's name (case-insensitive)."""
    folded = name.strip().lower()
    return folded in RESERVED_NAMES or folded.startswith(_RESERVED_PREFIXES)


def session_kind(session_id: str, principal: str | None) -> str:
    """``client``, or the platform (``twilio``, ``retell``, ``layercode``) a session
    belongs to. The id prefix is checked too, so sessions stored before owner
    strings were namespaced (owner ``twilio``) are still a platform's."""
    if principal is not None and principal.startswith(PLATFORM_PREFIX):
        return principal[len(PLATFORM_PREFIX) :]
    prefix, sep, _ = session_id.partition("_")
    if sep and prefix in PLATFORM_KINDS:
        return prefix
    return CLIENT_KIND
