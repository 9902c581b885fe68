"""Settings: the only module that reads the environment (and an optional ``.env``).

Every field is read from the environment variable named in its alias, so that a
bad value is reported with the variable's own name.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.auth import check_hs256_secret, parse_api_keys, parse_origins
from gateway.core.chunker import ChunkMode
from gateway.core.context import ContextBudget
from gateway.core.history import GenerationSettings, ThinkingLevel, ToolSpec
from gateway.core.tools import CONTROL_TOOLS
from gateway.errors import SettingsError
from gateway.providers.factory import PROVIDERS
from gateway.stores.factory import store_from_url
from gateway.tools.file import ToolsFile, load_tools_file

__all__ = ["Settings", "SettingsError", "load_settings"]

DEFAULT_GEMINI_MODEL = "gemini-3.8-flash"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

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
    gemini_thinking_level: Annotated[
        ThinkingLevel | None, Field(validation_alias="GEMINI_THINKING_LEVEL")
    ] = None
    gemini_thinking_budget: Annotated[
        int | None, Field(ge=-1, validation_alias="GEMINI_THINKING_BUDGET")
    ] = None

    provider: Annotated[str | None, Field(validation_alias="GATEWAY_PROVIDER")] = None
    openai_api_key: Annotated[SecretStr | None, Field(validation_alias="OPENAI_API_KEY")] = None
    openai_base_url: Annotated[
        str | None, Field(pattern=r"^https?://\S+$", validation_alias="OPENAI_BASE_URL")
    ] = None
    openai_model: Annotated[str, Field(min_length=1, validation_alias="OPENAI_MODEL")] = (
        DEFAULT_OPENAI_MODEL
    )
    openai_timeout_s: Annotated[float, Field(gt=0, validation_alias="OPENAI_TIMEOUT_S")] = 60.0
    check_provider: Annotated[bool, Field(validation_alias="GATEWAY_CHECK_PROVIDER")] = False

    temperature: Annotated[
        float | None, Field(ge=0, le=2, validation_alias="GATEWAY_TEMPERATURE")
    ] = None
    max_output_tokens: Annotated[
        int | None, Field(ge=1, validation_alias="GATEWAY_MAX_OUTPUT_TOKENS")
    ] = None
    fallback_text: Annotated[str | None, Field(validation_alias="GATEWAY_FALLBACK_TEXT")] = None
    max_session_tokens: Annotated[
        int | None, Field(ge=1, validation_alias="GATEWAY_MAX_SESSION_TOKENS")
    ] = None
    max_history_tokens: Annotated[
        int, Field(ge=0, validation_alias="GATEWAY_MAX_HISTORY_TOKENS")
    ] = 16000
    max_history_messages: Annotated[
        int, Field(ge=0, validation_alias="GATEWAY_MAX_HISTORY_MESSAGES")
    ] = 200

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
    twilio_welcome_greeting: Annotated[str, Field(validation_alias="TWILIO_WELCOME_GREETING")] = ""
    twilio_interruptible: Annotated[bool | None, Field(validation_alias="TWILIO_INTERRUPTIBLE")] = (
        None
    )
    twilio_preemptible: Annotated[bool | None, Field(validation_alias="TWILIO_PREEMPTIBLE")] = None
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
    # permessage-deflate costs ~46 KiB of zlib state per connection (bench/idle_memory.py)
    # and CPU per frame, to shrink frames of a few hundred bytes: off unless asked for.
    ws_deflate: Annotated[bool, Field(validation_alias="GATEWAY_WS_DEFLATE")] = False
    # How eagerly each route releases a reply (see gateway.core.chunker.ChunkMode): whole
    # sentences for clients that speak each chunk; words where the platform streams text
    # into its own TTS chunking (Twilio, Retell, OpenAI-compatible hooks, Layercode).
    chunking: Annotated[ChunkMode, Field(validation_alias="GATEWAY_CHUNKING")] = ChunkMode.SENTENCE
    twilio_chunking: Annotated[ChunkMode, Field(validation_alias="TWILIO_CHUNKING")] = (
        ChunkMode.WORD
    )
    retell_chunking: Annotated[ChunkMode, Field(validation_alias="RETELL_CHUNKING")] = (
        ChunkMode.WORD
    )
    layercode_chunking: Annotated[ChunkMode, Field(validation_alias="LAYERCODE_CHUNKING")] = (
        ChunkMode.WORD
    )
    openai_chunking: Annotated[ChunkMode, Field(validation_alias="OPENAI_COMPAT_CHUNKING")] = (
        ChunkMode.WORD
    )
    tools_file: Annotated[Path | None, Field(validation_alias="GATEWAY_TOOLS_FILE")] = None
    tools_secret: Annotated[SecretStr | None, Field(validation_alias="GATEWAY_TOOLS_SECRET")] = None
    tool_timeout_s: Annotated[
        float, Field(gt=0, le=600, validation_alias="GATEWAY_TOOL_TIMEOUT_S")
    ] = 30.0
    call_control: Annotated[str, Field(validation_alias="GATEWAY_CALL_CONTROL")] = ""
    openai_compat_max_body_bytes: Annotated[
        int, Field(ge=1024, validation_alias="OPENAI_COMPAT_MAX_BODY_BYTES")
    ] = 4 << 20
    openai_compat_max_messages: Annotated[
        int, Field(ge=1, validation_alias="OPENAI_COMPAT_MAX_MESSAGES")
    ] = 10000

    @field_validator("call_control")
    @classmethod
    def _control_names(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in CONTROL_TOOLS]
        if unknown:
            raise ValueError(
                f"GATEWAY_CALL_CONTROL: {unknown[0]!r} is not a call-control tool; use any of "
                f"{', '.join(CONTROL_TOOLS)}"
            )
        return ",".join(names)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().lower()
        if name not in PROVIDERS:
            raise ValueError(f"GATEWAY_PROVIDER: use one of {', '.join(PROVIDERS)}, not {value!r}")
        return name

    @field_validator("fallback_text")
    @classmethod
    def _fallback_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_fallback_text(value)  # raises ValueError naming the variable
        return value

    # Operations: logs, metrics, traces, CORS (see README, Operating it).
    log_format: Annotated[Literal["text", "json"], Field(validation_alias="GATEWAY_LOG_FORMAT")] = (
        "text"
    )
    metrics_key: Annotated[
        SecretStr | None, Field(min_length=16, validation_alias="GATEWAY_METRICS_KEY")
    ] = None
    cors_origins: Annotated[str | None, Field(validation_alias="GATEWAY_CORS_ORIGINS")] = None
    otel_sdk_disabled: Annotated[bool, Field(validation_alias="OTEL_SDK_DISABLED")] = False
    otel_traces_exporter: Annotated[str | None, Field(validation_alias="OTEL_TRACES_EXPORTER")] = (
        None
    )
    otel_endpoint: Annotated[
        str | None,
        Field(pattern=r"^https?://\S+$", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"),
    ] = None
    otel_traces_endpoint: Annotated[
        str | None,
        Field(pattern=r"^https?://\S+$", validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ] = None

    # --- security, second pass (README: Security) ---------------------------------
    admin_keys: Annotated[SecretStr | None, Field(validation_alias="GATEWAY_ADMIN_KEYS")] = None
    allowed_hosts: Annotated[str | None, Field(validation_alias="GATEWAY_ALLOWED_HOSTS")] = None
    forwarded_allow_ips: Annotated[str, Field(validation_alias="FORWARDED_ALLOW_IPS")] = (
        "127.0.0.1,::1"
    )
    max_stored_sessions: Annotated[
        int, Field(ge=1, validation_alias="GATEWAY_MAX_STORED_SESSIONS")
    ] = 10000
    max_instructions_chars: Annotated[
        int, Field(ge=1, validation_alias="GATEWAY_MAX_INSTRUCTIONS_CHARS")
    ] = 8000
    max_session_chars: Annotated[
        int, Field(ge=1000, validation_alias="GATEWAY_MAX_SESSION_CHARS")
    ] = 200_000
    max_in_bytes_per_s: Annotated[
        int, Field(ge=1024, validation_alias="GATEWAY_MAX_IN_BYTES_PER_S")
    ] = 262_144
    header_timeout_s: Annotated[float, Field(gt=0, validation_alias="GATEWAY_HEADER_TIMEOUT_S")] = (
        10.0
    )
    max_header_bytes: Annotated[
        int, Field(ge=1024, le=65536, validation_alias="GATEWAY_MAX_HEADER_BYTES")
    ] = 16384
    max_sockets: Annotated[int, Field(ge=8, validation_alias="GATEWAY_MAX_SOCKETS")] = 2048
    fd_reserve: Annotated[int, Field(ge=8, validation_alias="GATEWAY_FD_RESERVE")] = 64

    @field_validator("admin_keys")
    @classmethod
    def _admin_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value(), variable="GATEWAY_ADMIN_KEYS")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_hs256_secret(value.get_secret_value())
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_parse(cls, value: str | None) -> str | None:
        for host in (value or "").split(","):
            host = host.strip()
            if (
                host
                and host != "*"
                and (
                    "/" in host
                    or "*" in host[1:]
                    or host.startswith("*")
                    and not host.startswith("*.")
                )
            ):
                raise ValueError(
                    f"GATEWAY_ALLOWED_HOSTS: {host!r} is not a host name like "
                    "voice.example.com or *.example.com"
                )
        return value

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
        if self.tools_file is not None:
            self.tools()  # raises SettingsError naming the file and the tool
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ValueError(
                "set GATEWAY_JWT_SECRET (HS256) or GATEWAY_JWT_PUBLIC_KEY (RS256), not both"
            )
        if self.api_keys is not None and self.admin_keys is not None:
            shared = (
                parse_api_keys(self.api_keys.get_secret_value()).keys()
                & parse_api_keys(
                    self.admin_keys.get_secret_value(), variable="GATEWAY_ADMIN_KEYS"
                ).keys()
            )
            if shared:
                raise ValueError("GATEWAY_ADMIN_KEYS: an admin key must not also be an API key")
        if self.instructions and self.instructions_file:
            raise ValueError("set GATEWAY_INSTRUCTIONS or GATEWAY_INSTRUCTIONS_FILE, not both")
        if self.instructions_file is not None and not self.instructions_file.is_file():
            raise ValueError(
                f"GATEWAY_INSTRUCTIONS_FILE: {self.instructions_file} is not a readable file"
            )
        if self.gemini_thinking_level is not None and self.gemini_thinking_budget is not None:
            raise ValueError("set GEMINI_THINKING_LEVEL or GEMINI_THINKING_BUDGET, not both")
        if self.provider == "gemini" and not self.uses_gemini:
            raise ValueError("GATEWAY_PROVIDER=gemini needs GEMINI_API_KEY (or GOOGLE_API_KEY)")
        if self.provider == "openai" and not self.uses_openai and self.openai_base_url is None:
            raise ValueError(
                "GATEWAY_PROVIDER=openai needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
                "server that takes no key"
            )
        return self

    def system_instruction(self) -> str | None:
        """The system instructions, read from the file when one is configured."""
        if self.instructions_file is not None:
            return self.instructions_file.read_text(encoding="utf-8").strip() or None
        return self.instructions.strip() if self.instructions else None

    @property
    def cors_origin_list(self) -> list[str]:
        """``GATEWAY_CORS_ORIGINS`` as a list (``["*"]`` for any origin)."""
        return parse_cors_origins(self.cors_origins)

    @field_validator("cors_origins")
    @classmethod
    def _cors_parse(cls, value: str | None) -> str | None:
        parse_cors_origins(value)
        return value

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where traces go (OTLP/HTTP), or ``None``: tracing is off unless the
        standard ``OTEL_*`` variables ask for it (an endpoint, or
        ``OTEL_TRACES_EXPORTER=otlp``), and ``OTEL_SDK_DISABLED`` turns it off."""
        exporter = (self.otel_traces_exporter or "").strip().lower()
        if self.otel_sdk_disabled or exporter == "none":
            return None
        if self.otel_traces_endpoint:
            return self.otel_traces_endpoint
        if self.otel_endpoint:
            return self.otel_endpoint.rstrip("/") + "/v1/traces"
        if exporter == "otlp":
            return "http://localhost:4318/v1/traces"
        return None

    @property
    def uses_gemini(self) -> bool:
        return self.gemini_api_key is not None and bool(self.gemini_api_key.get_secret_value())

    def generation(self) -> GenerationSettings:
        """The generation settings every session starts from."""
        return GenerationSettings(
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            thinking_level=self.gemini_thinking_level,
            thinking_budget=self.gemini_thinking_budget,
        )

    def fallback_lines(self) -> tuple[tuple[str, str], ...]:
        """``GATEWAY_FALLBACK_TEXT`` as ``(language, line)`` pairs."""
        return parse_fallback_text(self.fallback_text or "")

    def tools(self) -> ToolsFile:
        """The server tools ``GATEWAY_TOOLS_FILE`` declares (none without it)."""
        return ToolsFile() if self.tools_file is None else load_tools_file(self.tools_file)

    def control_tools(self) -> tuple[ToolSpec, ...]:
        """The call-control tools ``GATEWAY_CALL_CONTROL`` enables."""
        return tuple(CONTROL_TOOLS[n] for n in self.call_control.split(",") if n)

    def context_budget(self) -> ContextBudget:
        """How much history a turn sends (0 in a setting: no such limit)."""
        return ContextBudget(
            max_tokens=self.max_history_tokens or None,
            max_messages=self.max_history_messages or None,
        )

    @property
    def uses_openai(self) -> bool:
        return self.openai_api_key is not None and bool(self.openai_api_key.get_secret_value())

    @property
    def provider_name(self) -> str:
        """``GATEWAY_PROVIDER``, or Gemini when its key is set, else OpenAI when its
        key is, else offline."""
        if self.provider is not None:
            return self.provider
        if self.uses_gemini:
            return "gemini"
        return "openai" if self.uses_openai else "offline"


def parse_fallback_text(value: str) -> tuple[tuple[str, str], ...]:
    """``GATEWAY_FALLBACK_TEXT``: one line for every language, or a JSON object of
    lines by language tag (``{"en": "...", "es": "...", "*": "..."}``)."""
    text = value.strip()
    if not text:
        return ()
    if not text.startswith("{"):
        return (("*", text),)
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"GATEWAY_FALLBACK_TEXT: not a valid JSON object: {exc}") from exc
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in table.items()
    ):
        raise ValueError(
            "GATEWAY_FALLBACK_TEXT: give a line, or a JSON object of non-empty lines by "
            'language, e.g. {"en": "Sorry, say that again?", "es": "Perdón, ¿puede repetir?"}'
        )
    return tuple((tag, line.strip()) for tag, line in table.items())


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


def parse_cors_origins(value: str | None) -> list[str]:
    """Comma-separated origins (``https://app.example``) or ``*``; ``ValueError`` if malformed."""
    if not value or not value.strip():
        return []
    origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
    if origins == ["*"]:
        return origins
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s,]+", origin):
            raise ValueError(
                f"GATEWAY_CORS_ORIGINS: {origin!r} is not an origin such as https://app.example "
                "(or give * alone)"
            )
    return origins


def known_variables() -> set[str]:
    """Every environment variable a setting reads."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
    return names


def unknown_variables(names: Iterable[str]) -> list[str]:
    """A warning for each name that looks like a setting but is none: any
    ``GATEWAY_*`` name, or one close to a setting's name (``GATWAY_API_KEYS``)."""
    known = known_variables()
    warnings = []
    for name in sorted(set(names)):
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if not close and not name.startswith("GATEWAY_"):
            continue
        hint = f"; did you mean {close[0]}?" if close else " (see README, Configuration)"
        warnings.append(f"unknown setting {name} is ignored{hint}")
    return warnings


def unknown_settings(env_file: str | Path | None = ".env") -> list[str]:
    """:func:`unknown_variables` over the environment and the ``.env`` file."""
    names = set(os.environ)
    if env_file is not None and Path(env_file).is_file():
        names.update(k for k in dotenv_values(env_file) if k)
    return unknown_variables(names)
