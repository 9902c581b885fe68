"""Twilio ConversationRelay on ``WS /twilio`` (Telnyx Conversation Relay speaks the same).

The platform does speech-to-text and text-to-speech; the gateway gets the caller's
words and streams the reply back as text tokens. The mapping (see
docs/adapters/twilio.md):

- ``setup`` opens the session keyed by the call (``callSid``, or Telnyx's
  ``callControlId``/``callSessionId``); frames before it are ignored;
- ``prompt`` with ``last: true`` is a user message (partials start nothing); a
  ``lang`` other than the session's switches it (``session.update``: the chunker's
  rules) and Twilio's voice with a ``language`` frame; before the first one, the
  ``customParameters`` become template variables (``{{name}}`` in the
  instructions) and ``TWILIO_WELCOME_GREETING`` — what the caller heard of it,
  if they barged in — enters history;
- ``interrupt`` interrupts the streaming (or just completed) turn and keeps only
  ``utteranceUntilInterrupt`` in history; ``dtmf`` becomes a user message
  (``TWILIO_DTMF_NOTE``); ``info`` and ``error`` are logged;
- each chunk goes out as ``text`` with ``last: false``; a turn ends with ``last:
  true`` (completed, superseded, or failed with a short apology); an interrupted
  turn sends nothing more (Twilio already stopped speaking);
- ``session.ended`` becomes ``end`` with JSON ``handoffData``;
- call control: ``send_digits`` becomes ``sendDigits`` at once; ``end_call`` and
  ``transfer_call`` end the turn with ``last: true`` and then ``end`` (``handoffData``
  ``{"reasonCode": "end-call" | "transfer", "to", "reason", "sessionId"}``: your
  ``<Connect action>`` URL dials ``to``). ConversationRelay reports no playback
  progress, so ``end`` waits the goodbye's estimated speaking time
  (:data:`CHARS_PER_S`, from the turn's first chunk, at most
  :data:`MAX_GOODBYE_S`) and the goodbye is not cut off; a caller who interrupts
  while the goodbye is still being generated cancels the hang-up (once its turn
  ended, the ``end`` is on its way).

When ``TWILIO_AUTH_TOKEN`` is set the upgrade request must carry a valid
``X-Twilio-Signature``, or it is refused with HTTP 403 before the WebSocket opens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from gateway.adapters import twilio_wire as tw
from gateway.adapters.wsbase import POLICY_VIOLATION, parse_frame, serve_keyed
from gateway.connection import Later, Reply
from gateway.core.events import (
    ClientEvent,
    Error,
    Greeted,
    Interrupt,
    ResponseCallControl,
    ResponseEnd,
    ResponseStart,
    ResponseTts,
    ServerEvent,
    SessionEnded,
    SessionUpdate,
    SessionUpdated,
    UserMessage,
)
from gateway.core.replay import LoggedEvent
from gateway.core.wire import WireError
from gateway.settings import Settings
from gateway.wsroute import SocketRoute

log = logging.getLogger("gateway.adapters.twilio")

PLATFORM = "twilio"
#: How long a connected relay may take to send ``setup``.
SETUP_TIMEOUT_S = 15.0
#: Spoken when a turn fails, so the caller is not left in silence (English sessions only).
FAILURE_TEXT = "Sorry, I ran into a problem there. Could you say that again?"
_KEYS_LOGGED = 20
#: Speaking rate assumed for the goodbye before ``end`` (about 150 words a minute).
CHARS_PER_S = 15.0
#: The longest wait for a goodbye to be spoken before ``end``.
MAX_GOODBYE_S = 10.0


class TwilioCodec:
    """ConversationRelay frames <-> session events, for one call."""

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        dtmf_note: str,
        failure_text: str,
        clock: Callable[[], float] = time.monotonic,
        language: str = "en",
        greeting: str = "",
        interruptible: bool | None = None,
        preemptible: bool | None = None,
    ) -> None:
        self._max = max_frame_bytes
        self._language = language.lower()
        self._voice_language = language.lower()
        self._greeting = greeting.strip()
        self._heard_greeting: str | None = None
        self._prompted = False
        self._flags = {"interruptible": interruptible, "preemptible": preemptible}
        self._clock = clock
        #: The streaming turn's call control (end or transfer), its chunks' length
        #: and when its first chunk went out.
        self._control: ResponseCallControl | None = None
        self._spoken = 0
        self._first_chunk_at: float | None = None
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

    def decode(
        self, frame: str | bytes
    ) -> ClientEvent | tuple[ClientEvent, ...] | WireError | Reply | None:
        parsed = self._parse(frame)
        if parsed is None:
            return None  # already logged
        match parsed:
            case tw.Prompt():
                text = parsed.voicePrompt.strip()
                if not parsed.last or not text:
                    log.debug("%s: partial or empty prompt noted", PLATFORM)
                    return None
                return self._prompt(text, parsed.lang)
            case tw.Interrupt():
                log.debug("%s: interrupt after %s ms", PLATFORM, parsed.duration_ms)
                if self._turn_id is None:
                    if not self._prompted and self._greeting:
                        self._heard_greeting = parsed.utteranceUntilInterrupt or ""
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

    def encode(self, frame: LoggedEvent, event: ServerEvent | None) -> str | Later | None:
        match event:
            case ResponseStart():
                self._turn_id = event.turn_id
                self._control, self._spoken, self._first_chunk_at = None, 0, None
            case ResponseTts():
                if self._first_chunk_at is None:
                    self._first_chunk_at = self._clock()
                self._spoken += len(event.text) + 1
                return tw.text_frame(event.text + " ", last=False, **self._flags)
            case SessionUpdated(language=str(language)) if language.lower() != self._voice_language:
                self._voice_language = language.lower()
                return tw.language_frame(language)
            case ResponseCallControl(action="send_digits", digits=str(digits)):
                return tw.send_digits_frame(digits)
            case ResponseCallControl():
                self._control = event
            case ResponseEnd(status="completed") if self._control is not None:
                control, self._control = self._control, None
                return Later(
                    (tw.text_frame("", last=True),),
                    tw.end_frame(_handoff(control)),
                    self._goodbye_left(),
                )
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

    def _prompt(self, text: str, lang: str | None) -> tuple[ClientEvent, ...]:
        """A final prompt: first the call's setup (variables, greeting), then a
        language switch if ``lang`` changed, then the user message."""
        events: list[ClientEvent] = []
        if not self._prompted:
            self._prompted = True
            variables = {k: str(v) for k, v in self.custom_parameters.items()}
            if self.call_key is not None:
                variables.setdefault("callSid", self.call_key)
            if variables:
                events.append(SessionUpdate(variables=tuple(sorted(variables.items()))))
            heard = self._greeting if self._heard_greeting is None else self._heard_greeting
            if heard.strip():
                events.append(Greeted(heard))
        tag = (lang or "").strip()
        if tag and tag.split("-")[0].lower() != self._language.split("-")[0]:
            # The caller speaks another language: the session (chunker) and the voice follow.
            self._language = tag.lower()
            events.append(SessionUpdate(language=tag))
        events.append(UserMessage(text=text))
        return tuple(events)

    def _goodbye_left(self) -> float:
        """Seconds the turn's speech is likely still playing."""
        if self._first_chunk_at is None:
            return 0.0
        elapsed = self._clock() - self._first_chunk_at
        return max(0.0, min(MAX_GOODBYE_S, self._spoken / CHARS_PER_S) - elapsed)


def _handoff(control: ResponseCallControl) -> dict[str, Any]:
    """``handoffData`` for the ``<Connect action>`` URL: why the relay ended."""
    handoff: dict[str, Any] = {
        "reasonCode": "transfer" if control.action == "transfer_call" else "end-call",
        "sessionId": control.session_id,
    }
    if control.to is not None:
        handoff["to"] = control.to
    if control.reason is not None:
        handoff["reason"] = control.reason
    return handoff


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
            language=settings.language,
            greeting=settings.twilio_welcome_greeting,
            interruptible=settings.twilio_interruptible,
            preemptible=settings.twilio_preemptible,
        )

        async def setup() -> str | None:
            return await _await_setup(websocket, codec)

        await serve_keyed(
            websocket,
            codec,
            kind=PLATFORM,
            key=setup,
            settings=settings,
            chunk_mode=settings.twilio_chunking,
        )

    return [SocketRoute("/twilio", endpoint)]
