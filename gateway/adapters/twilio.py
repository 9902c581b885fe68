"""Twilio ConversationRelay on ``WS /twilio`` (Telnyx Conversation Relay speaks the same).

The platform does speech-to-text and text-to-speech; the gateway gets the caller's
words and streams the reply back as text tokens. The mapping (see
docs/adapters/twilio.md):

- ``setup`` opens the session keyed by the call (``callSid``, or Telnyx's
  ``callControlId``/``callSessionId``); frames before it are ignored;
- ``prompt`` with ``last: true`` is a user message (partials start nothing);
- ``interrupt`` interrupts the streaming (or just completed) turn and keeps only
  ``utteranceUntilInterrupt`` in history; ``dtmf`` becomes a user message
  (``TWILIO_DTMF_NOTE``); ``info`` and ``error`` are logged;
- each chunk goes out as ``text`` with ``last: false``; a turn ends with ``last:
  true`` (completed, superseded, or failed with a short apology); an interrupted
  turn sends nothing more (Twilio already stopped speaking);
- ``session.ended`` becomes ``end`` with JSON ``handoffData``.

When ``TWILIO_AUTH_TOKEN`` is set the upgrade request must carry a valid
``X-Twilio-Signature``, or it is refused with HTTP 403 before the WebSocket opens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.adapters import twilio_wire as tw
from gateway.adapters.wsbase import POLICY_VIOLATION, parse_frame, serve_keyed
from gateway.connection import Reply
from gateway.core.events import (
    ClientEvent,
    Error,
    Interrupt,
    ResponseEnd,
    ResponseStart,
    ResponseTts,
    ServerEvent,
    SessionEnded,
    UserMessage,
)
from gateway.core.replay import LoggedEvent
from gateway.core.wire import WireError
from gateway.settings import Settings

log = logging.getLogger("gateway.adapters.twilio")

PLATFORM = "twilio"
#: How long a connected relay may take to send ``setup``.
SETUP_TIMEOUT_S = 15.0
#: Spoken when a turn fails, so the caller is not left in silence (English sessions only).
FAILURE_TEXT = "Sorry, I ran into a problem there. Could you say that again?"
_KEYS_LOGGED = 20


class TwilioCodec:
    """ConversationRelay frames <-> session events, for one call."""

    def __init__(self, *, max_frame_bytes: int, dtmf_note: str, failure_text: str) -> None:
        self._max = max_frame_bytes
        self._dtmf_note = dtmf_note
        self._failure_text = failure_text
        self._turn_id: str | None = None
        self.call_key: str | None = None
        #: ``<Parameter>`` values of the TwiML, from ``setup.customParameters``.
        self.custom_parameters: dict[str, Any] = {}

    def _parse(self, frame: str | bytes) -> tw.InboundFrame | None:
        return parse_frame(tw.INBOUND, frame, max_bytes=self._max, platform=PLATFORM, tag="type")

    def setup(self, frame: str | bytes) -> str | None:
        """Take the ``setup`` frame: the call's key, or ``None`` for any other frame."""
        parsed = self._parse(frame)
        if parsed is None:
            return None
        if not isinstance(parsed, tw.Setup):
            log.error("%s: %s frame before setup ignored", PLATFORM, parsed.type)
            return None
        self.call_key = parsed.call_key
        self.custom_parameters = dict(parsed.customParameters or {})
        log.info(
            "%s: setup custom parameter keys=%s",
            PLATFORM,
            sorted(self.custom_parameters)[:_KEYS_LOGGED],
        )
        return self.call_key

    def decode(self, frame: str | bytes) -> ClientEvent | WireError | Reply | None:
        parsed = self._parse(frame)
        if parsed is None:
            return None  # already logged
        match parsed:
            case tw.Prompt():
                text = parsed.voicePrompt.strip()
                if not parsed.last or not text:
                    log.debug("%s: partial or empty prompt noted", PLATFORM)
                    return None
                return UserMessage(text=text)
            case tw.Interrupt():
                log.debug("%s: interrupt after %s ms", PLATFORM, parsed.duration_ms)
                if self._turn_id is None:
                    return None
                return Interrupt(turn_id=self._turn_id, heard_text=parsed.utteranceUntilInterrupt)
            case tw.Dtmf():
                return UserMessage(text=self._dtmf_note.replace("{digit}", str(parsed.digit)))
            case tw.Info():
                log.debug("%s: info %s", PLATFORM, str(parsed.name)[:40])
            case tw.PlatformError():
                # The description may quote our own frames (model text): details at debug.
                log.warning("%s: the platform reported an error", PLATFORM)
                log.debug("%s: error description: %s", PLATFORM, parsed.description)
            case tw.Setup():
                log.warning("%s: second setup frame ignored", PLATFORM)
        return None

    def encode(self, frame: LoggedEvent, event: ServerEvent | None) -> str | None:
        match event:
            case ResponseStart():
                self._turn_id = event.turn_id
            case ResponseTts():
                return tw.text_frame(event.text + " ", last=False)
            case ResponseEnd(status="completed" | "superseded"):
                return tw.text_frame("", last=True)
            case ResponseEnd(status="failed"):
                return tw.text_frame(self._failure_text, last=True)
            case SessionEnded():
                handoff = {
                    "reasonCode": "session-ended",
                    "reason": event.reason,
                    "sessionId": event.session_id,
                }
                return tw.end_frame(handoff)
            case Error():
                log.debug("%s: session error code=%s not sent", PLATFORM, event.code)
        return None  # interrupted turns and connection events: nothing to say

    def heartbeat(self, session_id: str, seq: int) -> str | None:
        return None  # no data-frame keep-alive in this protocol; an unknown frame is an error


# --- signature ---------------------------------------------------------------------


def signature(auth_token: str, url: str) -> str:
    """``X-Twilio-Signature`` for a request without POST parameters (a WebSocket)."""
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def requested_url(websocket: WebSocket, public_url: str | None) -> str:
    """The URL Twilio dialled: ``wss://host/path?query`` (scheme and host from
    ``public_url`` when set, else ``wss`` and the ``Host`` header)."""
    if public_url is not None:
        base = urlsplit(public_url)
        scheme = "ws" if base.scheme == "http" else "wss"
        netloc = base.netloc
    else:
        scheme, netloc = "wss", websocket.headers.get("host", "")
    raw_path: bytes | None = websocket.scope.get("raw_path")
    path: str = raw_path.decode("latin-1") if raw_path else websocket.scope["path"]
    query: str = websocket.scope.get("query_string", b"").decode("latin-1")
    return urlunsplit((scheme, netloc, path, query, ""))


def _with_and_without_port(url: str) -> set[str]:
    """Twilio's own validators accept the URL with and without the default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 80 if parts.scheme == "ws" else 443
    variants = {url, urlunsplit(parts._replace(netloc=host))}
    if parts.port is None:
        variants.add(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    return variants


def signature_valid(websocket: WebSocket, auth_token: str, public_url: str | None) -> bool:
    """Whether the upgrade request carries Twilio's signature of its URL."""
    given = websocket.headers.get("x-twilio-signature")
    if not given:
        return False
    url = requested_url(websocket, public_url)
    return any(
        hmac.compare_digest(signature(auth_token, variant).encode(), given.encode())
        for variant in _with_and_without_port(url)
    )


# --- endpoint ----------------------------------------------------------------------


async def _await_setup(websocket: WebSocket, codec: TwilioCodec) -> str | None:
    """Read frames until ``setup``; ``None`` if the relay leaves or never sends one."""
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return None
                text: str | None = message.get("text")
                key = codec.setup(text if text is not None else message.get("bytes") or b"")
                if key is not None:
                    return key
    except TimeoutError:
        log.warning("%s: no setup within %g s; closing", PLATFORM, SETUP_TIMEOUT_S)
        await websocket.close(POLICY_VIOLATION, "expected a setup frame")
        return None


def routes(settings: Settings) -> list[BaseRoute]:
    """``WS /twilio``."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    english = settings.language.lower().split("-")[0] == "en"

    async def endpoint(websocket: WebSocket) -> None:
        if token and not signature_valid(websocket, token, settings.public_url):
            log.warning("%s: upgrade refused: missing or invalid X-Twilio-Signature", PLATFORM)
            await websocket.close(POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await websocket.accept()
        codec = TwilioCodec(
            max_frame_bytes=settings.max_frame_bytes,
            dtmf_note=settings.twilio_dtmf_note,
            # GATEWAY_FALLBACK_TEXT, when set, is already spoken as the turn's last chunk.
            failure_text=FAILURE_TEXT if english and not settings.fallback_text else "",
        )

        async def setup() -> str | None:
            return await _await_setup(websocket, codec)

        await serve_keyed(websocket, codec, kind=PLATFORM, key=setup, settings=settings)

    return [WebSocketRoute("/twilio", endpoint)]
