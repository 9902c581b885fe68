"""Host and Origin checks in front of every route (DNS rebinding, cross-site requests).

A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding)
reaches a loopback gateway from the visitor's browser as *same origin*: its
requests carry ``Host: evil.example``. So every route checks ``Host`` against
the allowed names (starlette's ``TrustedHostMiddleware``; HTTP 400 otherwise),
except ``/health`` and ``/ready``, which orchestrators probe by IP and which
reveal nothing. Then every WebSocket upgrade, and every HTTP request that
changes state (``POST``, ``PUT``, ``PATCH``, ``DELETE``), is refused with 403
``origin_not_allowed`` when it comes from a foreign browser page.

The allowed hosts are ``GATEWAY_ALLOWED_HOSTS`` if set; else the loopback names
(plus the host of ``GATEWAY_PUBLIC_URL``) when bound to loopback or when
``GATEWAY_PUBLIC_URL`` is set; else any host, with a warning at start-up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import OriginPolicy, origin_of, parse_origins
from gateway.responses import problem
from gateway.settings import Settings

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Paths that answer on any ``Host`` (liveness and readiness probes).
PROBE_PATHS = frozenset({"/health", "/ready"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _public_host(settings: Settings) -> str | None:
    if settings.public_url is None:
        return None
    hostname = urlsplit(settings.public_url).hostname
    if hostname is None:
        return None
    return f"[{hostname}]" if ":" in hostname else hostname


def allowed_hosts(settings: Settings) -> list[str] | None:
    """The ``Host`` names the gateway answers to; ``None`` for any."""
    if settings.allowed_hosts is not None:
        hosts = [h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()]
        return None if "*" in hosts else hosts
    public = _public_host(settings)
    if is_loopback(settings.host) or public is not None:
        return [*LOOPBACK_HOSTS, *([public] if public else [])]
    return None


def origin_policy(settings: Settings) -> OriginPolicy:
    """Which browser pages may open a WebSocket."""
    public = frozenset({origin_of(settings.public_url)}) if settings.public_url else frozenset()
    return OriginPolicy(parse_origins(settings.allowed_origins), public)


def http_origin_policy(settings: Settings) -> OriginPolicy | None:
    """Which browser pages may change state through the HTTP API; ``None``: any.

    Those of :func:`origin_policy`, plus the origins ``GATEWAY_CORS_ORIGINS``
    names: an operator who lets a page call the API cross-origin means it (``*``:
    every page may).
    """
    cors = settings.cors_origin_list
    if "*" in cors:
        return None
    public = {origin_of(settings.public_url)} if settings.public_url else set()
    public |= {origin.strip().rstrip("/").lower() for origin in cors}
    return OriginPolicy(parse_origins(settings.allowed_origins), frozenset(public))


class CrossSiteGuard:
    """Refuses WebSocket upgrades and state-changing HTTP requests from foreign pages."""

    def __init__(
        self, app: ASGIApp, origins: OriginPolicy | None, http_origins: OriginPolicy | None
    ) -> None:
        self.app = app
        self.origins = origins
        self.http_origins = http_origins

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: what it lets through costs no coroutine frame here.
        kind = scope["type"]
        policy = self.origins if kind == "websocket" else self.http_origins
        guarded = kind == "websocket" or (kind == "http" and scope["method"] not in SAFE_METHODS)
        if guarded and policy is not None:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            # A browser that sends no Origin still says where the request came from.
            cross_site = origin is None and headers.get("sec-fetch-site") == "cross-site"
            if cross_site or not policy.allows(origin, headers.get("host", "")):
                refusal = problem(403, "origin_not_allowed", "this page's origin may not do that")
                return refusal(scope, receive, send)
        return self.app(scope, receive, send)


class BrowserGate:
    """The host check (all but the probes), then :class:`CrossSiteGuard`."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        guarded = CrossSiteGuard(app, origin_policy(settings), http_origin_policy(settings))
        hosts = allowed_hosts(settings)
        self.guarded: ASGIApp = (
            guarded if hosts is None else TrustedHostMiddleware(guarded, hosts, www_redirect=False)
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] in ("http", "websocket") and scope["path"] not in PROBE_PATHS:
            return self.guarded(scope, receive, send)
        return self.app(scope, receive, send)
