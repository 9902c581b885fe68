"""Error codes sent in ``error`` events and WebSocket close codes.

Every value here is documented in docs/protocol.md; the protocol tests check that
the two lists agree.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """``error.code`` values."""

    BINARY_FRAME = "binary_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LONG = "text_too_long"
    RATE_LIMITED = "rate_limited"
    TOKEN_BUDGET_EXHAUSTED = "token_budget_exhausted"
    INSTRUCTIONS_TOO_LONG = "instructions_too_long"
    SESSION_FULL = "session_full"
    PROVIDER_ERROR = "provider_error"
    INVALID_TOOL = "invalid_tool"
    UNKNOWN_CALL = "unknown_call"
    TOOL_TIMEOUT = "tool_timeout"
    INTERNAL_ERROR = "internal_error"


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    IDLE_TIMEOUT = 4000
    SLOW_CONSUMER = 4008
    BAD_RESUME = 4400
    BAD_RESUME_TOKEN = 4401
    UNKNOWN_SESSION = 4404
    TAKEN_OVER = 4409
    SESSION_ENDED = 4410
    TOO_MANY_SESSIONS = 4429
