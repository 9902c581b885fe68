"""Every exception the gateway raises on purpose, in one tree.

::

    GatewayError                    anything the gateway raises on purpose
     ├── SettingsError              start-up configuration is invalid (settings.py)
     ├── StoreError                 the session store failed (unreachable, corrupt, full)
     │    ├── StoreLocked           another process holds the store (one SQLite writer)
     │    ├── StoreUnavailable      no commit within GATEWAY_STORE_RETRY_S (pipeline.py)
     │    └── Fenced                a commit's lease was superseded (another instance owns it)
     ├── ProviderError              a model call failed: code, retryable, status
     ├── RequestError               an HTTP platform request cannot be served
     │    ├── BodyTooLarge          over the route's body limit (adapters/sse.py)
     │    ├── BadWebhook            not a Layercode webhook (adapters/layercode_wire.py)
     │    ├── UnknownWebhook        a Layercode webhook type not known (same)
     │    └── BadRequest            a chat completion request at fault (adapters/openai_wire.py)
     ├── AuthError                  a request is refused: status 401/403, code, message
     ├── StateError                 a stored session snapshot cannot be read
     ├── SessionError               a session cannot be opened or used as asked
     │    ├── ResumeRefused         resume refused: carries its WebSocket close code
     │    ├── TooManySessions       the caller owns the maximum number of sessions
     │    └── RuntimeStopped        the session's runtime stopped: open it afresh
     └── InvalidTransition          a lifecycle was asked for a transition it does not have

Leaves that belong to one module are defined there, on these bases. Bad client
*input* on a WebSocket is not an exception: the wire decoders return a
``WireError`` value, answered with an ``error`` event. A bad argument to a
function (a programming error) raises the built-in ``ValueError``. ``InvalidTransition`` is a
bug in the gateway, never the client's doing; the session's failure boundary
catches it like any other unexpected exception.

This module imports nothing, so the pure core can raise from it too.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every exception the gateway raises on purpose."""


class SettingsError(GatewayError):
    """Start-up configuration is invalid; the message names each bad variable."""


class StoreError(GatewayError):
    """The store failed (unreachable, corrupt, full)."""


class StoreLocked(StoreError):
    """The store is held by another process (SQLite allows one gateway per file)."""


class Fenced(StoreError):
    """A commit carried a lease that is no longer the session's: another instance owns it.

    Nothing of the commit was written; the writer must stop at once and deliver
    nothing more of the session (see :mod:`gateway.cluster`).
    """


class ProviderError(GatewayError):
    """A provider call failed.

    ``code`` is a stable machine-readable name (``rate_limited``, ``unavailable``,
    ``bad_request``, ``auth_failed``, ``model_not_found``, ``timeout``,
    ``connection_lost``, ``bad_response``, ``provider_error``); ``retryable`` says
    whether the same request may succeed if sent again; ``status`` is the HTTP
    status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "provider_error",
        retryable: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.status = status


class RequestError(GatewayError):
    """An HTTP platform request cannot be served; the message says why."""


class AuthError(GatewayError):
    """A request is refused: ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class StateError(GatewayError, ValueError):
    """A stored snapshot cannot be read (unknown version, corrupt data)."""


class SessionError(GatewayError):
    """A session cannot be opened or used as asked."""


class ResumeRefused(SessionError):
    """A resume attempt failed; ``code`` is the WebSocket close code to use."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TooManySessions(SessionError):
    """The principal already owns the maximum number of sessions."""


class RuntimeStopped(SessionError):
    """The runtime is stopping or stopped: nothing can attach to it any more."""


class InvalidTransition(GatewayError):
    """A lifecycle was asked to move between two states it does not connect."""
