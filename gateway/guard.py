"""The gate in front of every native route: origin, credentials, connection counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gateway.auth import ADMIN, Authenticator, OriginPolicy, Principal, parse_api_keys
from gateway.errors import AuthError
from gateway.hosts import allowed_hosts, is_loopback, origin_policy
from gateway.limits import ConnectionLimiter
from gateway.settings import Settings
from gateway.transport import socket_cap

log = logging.getLogger("gateway.security")


@dataclass(frozen=True, slots=True)
class Guard:
    """Checks callers; one per application, built from the settings."""

    auth: Authenticator
    origins: OriginPolicy
    connections: ConnectionLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        jwt_key: str | None = None
        algorithm = "HS256"
        if settings.jwt_secret is not None:
            jwt_key = settings.jwt_secret.get_secret_value()
        elif settings.jwt_public_key is not None:
            jwt_key, algorithm = settings.jwt_public_key, "RS256"
        api_keys = settings.api_keys.get_secret_value() if settings.api_keys else None
        admin_keys = settings.admin_keys.get_secret_value() if settings.admin_keys else None
        return cls(
            auth=Authenticator(
                api_keys=parse_api_keys(api_keys),
                admin_keys=parse_api_keys(admin_keys, variable="GATEWAY_ADMIN_KEYS"),
                jwt_key=jwt_key,
                jwt_algorithm=algorithm,
                jwt_audience=settings.jwt_audience,
                jwt_issuer=settings.jwt_issuer,
            ),
            origins=origin_policy(settings),
            connections=ConnectionLimiter(
                total=settings.max_connections,
                per_principal=settings.max_connections_per_principal,
            ),
        )

    def check_websocket(self, conn: HTTPConnection) -> Principal | None:
        """Origin first (a browser page from elsewhere), then credentials; admin keys
        open no WebSocket (they are for the session API)."""
        self.origins.check(conn)
        principal = self.auth.authenticate(conn)
        if principal is not None and principal.method == ADMIN:
            raise AuthError(403, "admin_key_not_allowed", "admin keys only work on the session API")
        return principal

    def check_http(self, conn: HTTPConnection) -> Principal | None:
        """Credentials for the HTTP API (cross-site state changes are refused before,
        by :class:`gateway.hosts.CrossSiteGuard`)."""
        return self.auth.authenticate(conn)


def posture(settings: Settings) -> list[tuple[bool, str]]:
    """One ``(open, line)`` per route family, saying how it is protected."""
    methods = [
        name
        for name, configured in (
            ("API keys", settings.api_keys is not None),
            ("HS256 JWT", settings.jwt_secret is not None),
            ("RS256 JWT", settings.jwt_public_key is not None),
        )
        if configured
    ]
    caller = " or ".join(methods)
    origins = settings.allowed_origins or "same origin"
    if settings.public_url:
        origins += f", {settings.public_url}"
    admin = "; platform sessions with GATEWAY_ADMIN_KEYS" if settings.admin_keys else ""
    hosts = allowed_hosts(settings)

    def line(route: str, guard: str, unset: str) -> tuple[bool, str]:
        if guard:
            return False, f"route {route}: protected by {guard}"
        return True, f"route {route}: OPEN, no credential ({unset} unset)"

    lines = [
        (
            hosts is None,
            "hosts: any Host header accepted (GATEWAY_ALLOWED_HOSTS and GATEWAY_PUBLIC_URL "
            "unset): DNS rebinding is possible"
            if hosts is None
            else f"hosts: {', '.join(hosts)} (others get 400; /health and /ready answer any)",
        ),
        line("/ws", caller and f"{caller}; origins {origins}", "GATEWAY_API_KEYS/JWT"),
        line("/sessions", caller and caller + admin, "GATEWAY_API_KEYS/JWT"),
        line(
            "/twilio",
            "X-Twilio-Signature" if settings.twilio_auth_token else "",
            "TWILIO_AUTH_TOKEN",
        ),
        line("/retell", "a secret path segment" if settings.retell_secret else "", "RETELL_SECRET"),
        line(
            "/layercode/agent",
            "layercode-signature" if settings.layercode_secret else "",
            "LAYERCODE_WEBHOOK_SECRET",
        ),
        line(
            "/v1/chat/completions",
            "bearer keys" if settings.openai_api_keys else "",
            "OPENAI_COMPAT_API_KEYS",
        ),
    ]
    lines.append((False, "route /health, /ready: open by design (probes; no session data)"))
    cap = socket_cap(settings.max_sockets, settings.fd_reserve)
    lines.append(
        (
            False,
            f"sockets: at most {cap} open at once (GATEWAY_MAX_SOCKETS={settings.max_sockets}, "
            f"file descriptors kept in reserve: {settings.fd_reserve}); "
            f"headers within {settings.header_timeout_s:g} s and {settings.max_header_bytes} bytes",
        )
    )
    return lines


def log_posture(settings: Settings) -> None:
    """Log :func:`posture` at start-up: open routes are warnings once anything is
    protected or the port is not loopback (an operator must see them)."""
    exposed = settings.auth_enabled or not is_loopback(settings.host)
    for is_open, text in posture(settings):
        log.log(logging.WARNING if is_open and exposed else logging.INFO, "%s", text)
