"""Who is calling, and from which page: API keys, JWTs and the Origin check.

Credentials are read from ``Authorization: Bearer …`` (so ``wscat -H`` works), a
``token`` query parameter (browsers cannot set headers on a WebSocket), or a
``Sec-WebSocket-Protocol`` entry ``bearer.<token>``. Authentication is off unless
API keys or a JWT key are configured; sessions then belong to the principal that
made them. Admin keys (``GATEWAY_ADMIN_KEYS``) are a separate credential that only
the session API accepts: they read every session, a platform's included.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
from starlette.requests import HTTPConnection

from gateway.errors import AuthError
from gateway.tenants import is_reserved

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


#: Who holds an admin key (``Principal.method``).
ADMIN = "admin"
#: The shortest HS256 secret accepted (RFC 7518 section 3.2: at least the hash size).
MIN_HS256_SECRET_BYTES = 32


def parse_api_keys(raw: str | None, *, variable: str = "GATEWAY_API_KEYS") -> dict[bytes, str]:
    """``"alice:k1, k2"`` → {sha256(key): principal}; a key without a name gets one
    derived from its hash, so logs never need the key itself. A name reserved for
    another namespace (``twilio``, ``platform:…``, see :mod:`gateway.tenants`) is
    refused, so no caller can pass for a platform."""
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
            raise ValueError(f"{variable}: every key must be at least 16 characters")
        if name.strip() and is_reserved(name):
            raise ValueError(
                f"{variable}: the name {name.strip()!r} is reserved (a platform or another "
                "namespace); choose another caller name"
            )
        keys[_digest(key)] = name.strip() or "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return keys


def check_hs256_secret(secret: str) -> None:
    """Raise ``ValueError`` for an HS256 secret shorter than 32 bytes (guessable)."""
    if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        raise ValueError(
            f"GATEWAY_JWT_SECRET: an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} "
            "bytes (e.g. `openssl rand -hex 32`)"
        )


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
        admin_keys: dict[bytes, str] | None = None,
        jwt_key: str | None = None,
        jwt_algorithm: str = "HS256",
        jwt_audience: str | None = None,
        jwt_issuer: str | None = None,
    ) -> None:
        self._api_keys = api_keys
        self._admin_keys = admin_keys or {}
        self._jwt_key = jwt_key
        self._jwt_algorithm = jwt_algorithm
        self._jwt_audience = jwt_audience
        self._jwt_issuer = jwt_issuer

    @property
    def enabled(self) -> bool:
        """Whether callers must authenticate (admin keys alone do not turn it on)."""
        return bool(self._api_keys) or self._jwt_key is not None

    def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller, ``None`` when authentication is off (and no admin key was
        presented); raises :class:`AuthError`."""
        token = presented_token(conn)
        digest = _digest(token) if token is not None else b""
        if token is not None:
            for key, name in self._admin_keys.items():
                if hmac.compare_digest(key, digest):
                    return Principal(name, ADMIN)
        if not self.enabled:
            return None
        if token is None:
            raise AuthError(401, "missing_credentials", "an API key or token is required")
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
        if is_reserved(subject):
            raise AuthError(403, "reserved_principal", "the token's subject is a reserved name")
        return Principal(subject, "jwt")


class OriginPolicy:
    """Cross-site guard for browser requests (WebSocket upgrades and state changes).

    With an allow-list, only those origins pass; without one, only pages served by
    the gateway itself (same origin). The origin of ``GATEWAY_PUBLIC_URL`` always
    passes, so a page behind a proxy that rewrites ``Host`` still connects.
    Requests without ``Origin`` (wscat, curl, telephony platforms, servers) are not
    from a browser page and pass; ``Origin: null`` (sandboxed frames, files) does not.
    """

    def __init__(
        self, allowed: frozenset[str] | None, public: frozenset[str] = frozenset()
    ) -> None:
        self._allowed = allowed
        self._public = public

    def allows(self, origin: str | None, host: str) -> bool:
        """Whether a request with this ``Origin`` and ``Host`` header may proceed."""
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self._public:
            return True
        if self._allowed is not None:
            return origin in self._allowed
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()

    def check(self, conn: HTTPConnection) -> None:
        """Raise ``AuthError(403)`` for a foreign browser origin."""
        if not self.allows(conn.headers.get("origin"), conn.headers.get("host", "")):
            raise AuthError(403, "origin_not_allowed", "this page's origin may not connect")


def origin_of(url: str) -> str:
    """``https://Example.com:8443/x`` → ``https://example.com:8443``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


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
