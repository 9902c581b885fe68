"""Who is calling, and from which page: API keys, JWTs and the Origin check.

Credentials are read from ``Authorization: Bearer …`` (so ``wscat -H`` works), a
``token`` query parameter (browsers cannot set headers on a WebSocket), or a
``Sec-WebSocket-Protocol`` entry ``bearer.<token>``. Authentication is off unless
API keys or a JWT key are configured; sessions then belong to the principal that
made them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
from starlette.requests import HTTPConnection

from gateway.errors import AuthError

BEARER_SUBPROTOCOL_PREFIX = "bearer."
#: The subprotocol the gateway selects when a client offers it with a bearer entry.
SUBPROTOCOL = "voice-gateway.v1"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    method: str


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def parse_api_keys(raw: str | None) -> dict[bytes, str]:
    """``"alice:k1, k2"`` → {sha256(key): principal}; a key without a name gets one
    derived from its hash, so logs never need the key itself."""
    keys: dict[bytes, str] = {}
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        if not sep:
            name, key = "", entry
        key = key.strip()
        if len(key) < 16:
            raise ValueError("GATEWAY_API_KEYS: every key must be at least 16 characters")
        keys[_digest(key)] = name.strip() or "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return keys


def presented_token(conn: HTTPConnection) -> str | None:
    """The bearer token from the header, the ``token`` query parameter or a subprotocol."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if token := conn.query_params.get("token"):
        return token
    for proto in conn.headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(BEARER_SUBPROTOCOL_PREFIX) and len(proto) > len(
            BEARER_SUBPROTOCOL_PREFIX
        ):
            return proto[len(BEARER_SUBPROTOCOL_PREFIX) :]
    return None


def chosen_subprotocol(conn: HTTPConnection) -> str | None:
    """The subprotocol to answer with: ours if offered, else the bearer entry itself
    (a browser fails the handshake if none of its offers is selected)."""
    offered = [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",")]
    offered = [p for p in offered if p]
    if not offered:
        return None
    return SUBPROTOCOL if SUBPROTOCOL in offered else offered[0]


class Authenticator:
    """Checks credentials against API keys and/or a JWT key."""

    def __init__(
        self,
        *,
        api_keys: dict[bytes, str],
        jwt_key: str | None = None,
        jwt_algorithm: str = "HS256",
        jwt_audience: str | None = None,
        jwt_issuer: str | None = None,
    ) -> None:
        self._api_keys = api_keys
        self._jwt_key = jwt_key
        self._jwt_algorithm = jwt_algorithm
        self._jwt_audience = jwt_audience
        self._jwt_issuer = jwt_issuer

    @property
    def enabled(self) -> bool:
        return bool(self._api_keys) or self._jwt_key is not None

    def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller, ``None`` when authentication is off; raises :class:`AuthError`."""
        if not self.enabled:
            return None
        token = presented_token(conn)
        if token is None:
            raise AuthError(401, "missing_credentials", "an API key or token is required")
        digest = _digest(token)
        for key, name in self._api_keys.items():
            if hmac.compare_digest(key, digest):
                return Principal(name, "api_key")
        if self._jwt_key is not None and token.count(".") == 2:
            return self._jwt(token)
        raise AuthError(401, "invalid_credentials", "the API key or token is not valid")

    def _jwt(self, token: str) -> Principal:
        assert self._jwt_key is not None
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=[self._jwt_algorithm],
                audience=self._jwt_audience,
                issuer=self._jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._jwt_audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "token_expired", "the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid_credentials", "the token is not valid") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "invalid_credentials", "the token has no subject")
        return Principal(subject, "jwt")


class OriginPolicy:
    """Cross-site WebSocket hijacking guard for browser upgrades.

    With an allow-list, only those origins may open a WebSocket; without one, only
    pages served by the gateway itself (same origin). Clients that send no
    ``Origin`` (wscat, telephony platforms, servers) are not browsers and pass.
    """

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self._allowed = allowed

    def check(self, conn: HTTPConnection) -> None:
        """Raise ``AuthError(403)`` for a foreign browser origin."""
        origin = conn.headers.get("origin")
        if origin is None:
            return
        origin = origin.strip().rstrip("/").lower()
        if self._allowed is not None:
            if origin in self._allowed:
                return
        elif urlsplit(origin).netloc == conn.headers.get("host", "").lower():
            return
        raise AuthError(403, "origin_not_allowed", "this page's origin may not connect")


def parse_origins(raw: str | None) -> frozenset[str] | None:
    """``"https://a.example, http://localhost:3000"`` → a set; ``None`` when unset."""
    if not raw:
        return None
    origins = frozenset(o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(
                f"GATEWAY_ALLOWED_ORIGINS: {origin!r} is not an origin like https://example.com"
            )
    return origins
