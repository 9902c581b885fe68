"""Settings: the only module that reads the environment (and an optional ``.env``).

Every field is read from the environment variable named in its alias, so that a
bad value is reported with the variable's own name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.auth import parse_api_keys, parse_origins
from gateway.stores.factory import store_from_url

DEFAULT_GEMINI_MODEL = "gemini-3.8-flash"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Gateway configuration. See the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=False,
        frozen=True,
    )

    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    gemini_model: Annotated[str, Field(min_length=1, validation_alias="GEMINI_MODEL")] = (
        DEFAULT_GEMINI_MODEL
    )
    gemini_base_url: Annotated[
        str | None, Field(pattern=r"^https?://\S+$", validation_alias="GEMINI_BASE_URL")
    ] = None
    gemini_timeout_s: Annotated[float, Field(gt=0, validation_alias="GEMINI_TIMEOUT_S")] = 60.0

    instructions: Annotated[str | None, Field(validation_alias="GATEWAY_INSTRUCTIONS")] = None
    instructions_file: Annotated[
        Path | None, Field(validation_alias="GATEWAY_INSTRUCTIONS_FILE")
    ] = None
    language: Annotated[
        str,
        Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", validation_alias="GATEWAY_LANGUAGE"),
    ] = "en"

    host: Annotated[str, Field(min_length=1, validation_alias="GATEWAY_HOST")] = "127.0.0.1"
    port: Annotated[
        int, Field(ge=0, le=65535, validation_alias=AliasChoices("GATEWAY_PORT", "PORT"))
    ] = 8000
    log_level: Annotated[LogLevel, Field(validation_alias="GATEWAY_LOG_LEVEL")] = "info"

    max_frame_bytes: Annotated[int, Field(ge=1024, validation_alias="GATEWAY_MAX_FRAME_BYTES")] = (
        65536
    )
    max_text_chars: Annotated[int, Field(ge=1, validation_alias="GATEWAY_MAX_TEXT_CHARS")] = 4000
    send_queue_size: Annotated[int, Field(ge=8, validation_alias="GATEWAY_SEND_QUEUE")] = 1024
    replay_capacity: Annotated[int, Field(ge=16, validation_alias="GATEWAY_REPLAY_EVENTS")] = 1024
    max_chunk_chars: Annotated[int, Field(ge=40, validation_alias="GATEWAY_MAX_CHUNK_CHARS")] = 300
    offline_token_delay_ms: Annotated[
        float, Field(ge=0, validation_alias="GATEWAY_OFFLINE_DELAY_MS")
    ] = 20.0

    store_url: Annotated[str, Field(min_length=1, validation_alias="GATEWAY_STORE")] = (
        "sqlite:///voice-gateway.db"
    )
    resume_grace_s: Annotated[float, Field(ge=0, validation_alias="GATEWAY_RESUME_GRACE_S")] = 30.0
    store_retry_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_STORE_RETRY_S")] = 10.0
    instance_ttl_s: Annotated[
        float, Field(gt=0, le=60, validation_alias="GATEWAY_INSTANCE_TTL_S")
    ] = 3.0
    session_ttl_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_SESSION_TTL_S")] = 86400.0
    sweep_interval_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_SWEEP_INTERVAL_S")] = (
        60.0
    )
    heartbeat_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_HEARTBEAT_S")] = 20.0
    ping_interval_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_PING_INTERVAL_S")] = (
        20.0
    )
    ping_timeout_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_PING_TIMEOUT_S")] = 20.0

    first_token_timeout_s: Annotated[
        float, Field(gt=0, validation_alias="GATEWAY_FIRST_TOKEN_TIMEOUT_S")
    ] = 20.0
    token_timeout_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_TOKEN_TIMEOUT_S")] = (
        15.0
    )
    provider_retries: Annotated[
        int, Field(ge=0, le=10, validation_alias="GATEWAY_PROVIDER_RETRIES")
    ] = 2
    provider_backoff_s: Annotated[
        float, Field(ge=0, validation_alias="GATEWAY_PROVIDER_BACKOFF_S")
    ] = 0.5

    drain_s: Annotated[float, Field(ge=0, validation_alias="GATEWAY_DRAIN_S")] = 20.0
    reconnect_delay_ms: Annotated[
        int, Field(ge=0, validation_alias="GATEWAY_RECONNECT_DELAY_MS")
    ] = 1000

    api_keys: Annotated[SecretStr | None, Field(validation_alias="GATEWAY_API_KEYS")] = None
    jwt_secret: Annotated[SecretStr | None, Field(validation_alias="GATEWAY_JWT_SECRET")] = None
    jwt_public_key: Annotated[str | None, Field(validation_alias="GATEWAY_JWT_PUBLIC_KEY")] = None
    jwt_audience: Annotated[str | None, Field(validation_alias="GATEWAY_JWT_AUDIENCE")] = None
    jwt_issuer: Annotated[str | None, Field(validation_alias="GATEWAY_JWT_ISSUER")] = None
    allowed_origins: Annotated[str | None, Field(validation_alias="GATEWAY_ALLOWED_ORIGINS")] = None
    rate_per_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_RATE_PER_S")] = 10.0
    rate_burst: Annotated[int, Field(ge=1, validation_alias="GATEWAY_RATE_BURST")] = 30
    max_connections: Annotated[int, Field(ge=1, validation_alias="GATEWAY_MAX_CONNECTIONS")] = 1000
    max_connections_per_principal: Annotated[
        int, Field(ge=1, validation_alias="GATEWAY_MAX_CONNECTIONS_PER_PRINCIPAL")
    ] = 20
    max_sessions_per_principal: Annotated[
        int, Field(ge=1, validation_alias="GATEWAY_MAX_SESSIONS_PER_PRINCIPAL")
    ] = 100
    idle_timeout_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_IDLE_TIMEOUT_S")] = 900.0

    public_url: Annotated[
        str | None, Field(pattern=r"^https?://[^/\s]+$", validation_alias="GATEWAY_PUBLIC_URL")
    ] = None
    twilio_auth_token: Annotated[SecretStr | None, Field(validation_alias="TWILIO_AUTH_TOKEN")] = (
        None
    )
    twilio_dtmf_note: Annotated[str, Field(validation_alias="TWILIO_DTMF_NOTE")] = (
        "(The caller pressed the key {digit} on the phone keypad.)"
    )
    retell_welcome: Annotated[str, Field(validation_alias="RETELL_WELCOME")] = ""
    retell_secret: Annotated[
        SecretStr | None, Field(min_length=16, validation_alias="RETELL_SECRET")
    ] = None
    layercode_secret: Annotated[
        SecretStr | None, Field(validation_alias="LAYERCODE_WEBHOOK_SECRET")
    ] = None
    layercode_welcome: Annotated[str, Field(validation_alias="LAYERCODE_WELCOME")] = (
        "Hello! How can I help you today?"
    )
    openai_api_keys: Annotated[str | None, Field(validation_alias="OPENAI_COMPAT_API_KEYS")] = None

    @field_validator("api_keys")
    @classmethod
    def _api_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value())  # raises ValueError naming the variable
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins_parse(cls, value: str | None) -> str | None:
        parse_origins(value)
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _jwt_public_key_file(cls, value: str | None) -> str | None:
        if value is None or value.lstrip().startswith("-----BEGIN"):
            return value
        path = Path(value)
        if not path.is_file():
            raise ValueError(
                "GATEWAY_JWT_PUBLIC_KEY: give a PEM public key or the path of a file holding one"
            )
        return path.read_text(encoding="utf-8")

    @property
    def auth_enabled(self) -> bool:
        return (
            self.api_keys is not None
            or self.jwt_secret is not None
            or self.jwt_public_key is not None
        )

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        store_from_url(url)  # raises ValueError naming GATEWAY_STORE
        return url

    @model_validator(mode="after")
    def _instructions_source(self) -> Settings:
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ValueError(
                "set GATEWAY_JWT_SECRET (HS256) or GATEWAY_JWT_PUBLIC_KEY (RS256), not both"
            )
        if self.instructions and self.instructions_file:
            raise ValueError("set GATEWAY_INSTRUCTIONS or GATEWAY_INSTRUCTIONS_FILE, not both")
        if self.instructions_file is not None and not self.instructions_file.is_file():
            raise ValueError(
                f"GATEWAY_INSTRUCTIONS_FILE: {self.instructions_file} is not a readable file"
            )
        return self

    def system_instruction(self) -> str | None:
        """The system instructions, read from the file when one is configured."""
        if self.instructions_file is not None:
            return self.instructions_file.read_text(encoding="utf-8").strip() or None
        return self.instructions.strip() if self.instructions else None

    @property
    def uses_gemini(self) -> bool:
        return self.gemini_api_key is not None and bool(self.gemini_api_key.get_secret_value())


class SettingsError(Exception):
    """Start-up configuration is invalid; the message names each bad variable."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into :class:`SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            name = ".".join(str(part) for part in err["loc"]) or "configuration"
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(msg if msg.startswith(f"{name}:") else f"{name}: {msg}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
