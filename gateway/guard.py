"""The gate in front of every native route: origin, credentials, connection counts."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gateway.auth import Authenticator, OriginPolicy, Principal, parse_api_keys, parse_origins
from gateway.limits import ConnectionLimiter
from gateway.settings import Settings


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
        return cls(
            auth=Authenticator(
                api_keys=parse_api_keys(api_keys),
                jwt_key=jwt_key,
                jwt_algorithm=algorithm,
                jwt_audience=settings.jwt_audience,
                jwt_issuer=settings.jwt_issuer,
            ),
            origins=OriginPolicy(parse_origins(settings.allowed_origins)),
            connections=ConnectionLimiter(
                total=settings.max_connections,
                per_principal=settings.max_connections_per_principal,
            ),
        )

    def check_websocket(self, conn: HTTPConnection) -> Principal | None:
        """Origin first (a browser page from elsewhere), then credentials."""
        self.origins.check(conn)
        return self.auth.authenticate(conn)

    def check_http(self, conn: HTTPConnection) -> Principal | None:
        """Credentials for the HTTP API (bearer tokens are not sent by browsers on
        their own, so there is no cross-site request to guard against)."""
        return self.auth.authenticate(conn)
