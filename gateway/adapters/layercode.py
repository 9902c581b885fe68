"""Layercode adapter: ``POST /layercode/agent``, one webhook per event, SSE back.

Each ``message`` webhook becomes a ``user.message`` (its ``turn_id`` is the
message id, so a retried webhook starts no second turn) in the session keyed by
``conversation_id``; ``session_id`` changes on every reconnect, the conversation
does not. The reply streams back as one ``response.tts`` per sentence chunk and
always ends with ``response.end`` carrying the request's ``turn_id``. See
docs/adapters/layercode.md.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.adapters import layercode_wire as wire
from gateway.adapters.layercode_wire import (
    BadWebhook,
    DataHook,
    MessageHook,
    SessionEndHook,
    SessionStartHook,
    SessionUpdateHook,
    UnknownWebhook,
)
from gateway.adapters.sse import (
    BodyTooLarge,
    Chunk,
    Cut,
    Duplicate,
    Ended,
    Failure,
    Frames,
    Rejected,
    SseResponse,
    ToolResult,
    TurnFollower,
    read_body,
)
from gateway.core.chunker import ChunkMode
from gateway.core.events import SetHistory, UserMessage
from gateway.core.history import Message
from gateway.deps import manager_of
from gateway.responses import problem
from gateway.runtime import SessionRuntime
from gateway.sessions import ResumeRefused, SessionManager
from gateway.settings import Settings
from gateway.stores.base import StoreError

log = logging.getLogger("gateway.adapters.layercode")

KIND: Final = "layercode"
PATH: Final = "/layercode/agent"
#: Webhook bodies larger than this are refused (``session.end`` carries a transcript).
MAX_BODY_BYTES: Final = 1 << 20
#: Spoken when a turn fails before any of it was spoken, by language prefix.
APOLOGIES: Final = {
    "en": "Sorry, I'm having trouble answering right now. Could you say that again?",
    "es": "Lo siento, ahora mismo no puedo responder. ¿Puedes repetirlo?",
}


def apology_for(language: str | None) -> str:
    """The apology spoken for a failed turn, in the session's language if known."""
    prefix = (language or "en").split("-")[0].lower()
    return APOLOGIES.get(prefix, APOLOGIES["en"])


async def _open(
    manager: SessionManager, conversation_id: str, chunk_mode: ChunkMode
) -> SessionRuntime:
    """The conversation's runtime (``open_keyed`` never returns one that is
    stopping), cutting replies in ``chunk_mode``."""
    runtime = await manager.open_keyed(KIND, conversation_id)
    runtime.session.use_chunk_mode(chunk_mode)
    return runtime


async def _only_end(turn_id: str | None) -> Frames:
    if turn_id is not None:
        yield wire.end(turn_id)


async def _answer(manager: SessionManager, hook: MessageHook, chunk_mode: ChunkMode) -> Frames:
    """The SSE frames answering one ``message`` webhook."""
    turn_id = hook.turn_id
    try:
        runtime = await _open(manager, hook.conversation_id, chunk_mode)
    except (StoreError, ResumeRefused):
        log.exception("layercode: cannot open conversation=%s", hook.conversation_id)
        yield problem(503, "session_unavailable", "the conversation cannot be opened now")
        return
    # From here to follower.start() nothing awaits: the runtime cannot stop in between.
    # A turn_id already answered is the core's to spot (user.duplicate).
    follower = TurnFollower(runtime)
    follower.start(UserMessage(hook.text, id=turn_id))
    try:
        async for update in follower:
            match update:
                case Chunk(text=text):
                    yield wire.tts(text, turn_id)
                case ToolResult(event=result):
                    yield wire.data(
                        {
                            "type": "function_result",
                            "call_id": result.call_id,
                            "name": result.name,
                            "output": result.output,
                        },
                        turn_id,
                    )
                case Failure(error=error):
                    log.info(
                        "layercode: turn failed conversation=%s turn_id=%s code=%s",
                        hook.conversation_id,
                        turn_id,
                        error.detail or error.code,
                    )
                    if not follower.chunks:
                        language = follower.ready.language if follower.ready else None
                        yield wire.tts(apology_for(language), turn_id)
                case Rejected(error=error):
                    log.info("layercode: message refused turn_id=%s code=%s", turn_id, error.code)
                case Duplicate():
                    log.info("layercode: turn_id=%s was already answered; no new turn", turn_id)
                case Cut(reason=reason):
                    log.debug("layercode: stream of turn_id=%s cut: %s", turn_id, reason)
                case Ended():
                    pass
    finally:
        await follower.aclose()
    yield wire.end(turn_id)


async def _welcome(
    manager: SessionManager, hook: SessionStartHook, welcome: str, chunk_mode: ChunkMode
) -> Frames:
    """The welcome turn: speak the configured welcome and add it to the history."""
    try:
        runtime = await _open(manager, hook.conversation_id, chunk_mode)
    except (StoreError, ResumeRefused):
        log.exception("layercode: cannot open conversation=%s", hook.conversation_id)
        yield problem(503, "session_unavailable", "the conversation cannot be opened now")
        return
    history = runtime.session.history
    if welcome and (not history or history[-1] != Message("assistant", welcome)):
        runtime.receive(SetHistory((*history, Message("assistant", welcome))))
    if welcome:
        yield wire.tts(welcome, hook.turn_id)
    yield wire.end(hook.turn_id)


async def _end_session(manager: SessionManager, hook: SessionEndHook) -> Response:
    """Stop the conversation's runtime: a streaming turn ends ``interrupted``; the
    session stays in the store, so the conversation can go on later."""
    try:
        runtime = await manager.open_keyed(KIND, hook.conversation_id)
        runtime.stop("the Layercode session ended")
        await runtime.stopped()
    except (StoreError, ResumeRefused):
        log.exception("layercode: cannot close conversation=%s", hook.conversation_id)
        return problem(503, "session_unavailable", "the conversation cannot be closed now")
    log.info("layercode: session ended conversation=%s", hook.conversation_id)
    return JSONResponse({"ok": True})


def routes(settings: Settings) -> list[BaseRoute]:
    """The Layercode webhook route."""
    secret = settings.layercode_secret.get_secret_value() if settings.layercode_secret else None
    if not secret:
        secret = None
        log.info("layercode: LAYERCODE_WEBHOOK_SECRET is not set; webhook signatures not checked")
    welcome = settings.layercode_welcome.strip()

    async def agent(request: Request) -> Response:
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return problem(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        if secret is not None:
            wrong = wire.signature_problem(
                request.headers.get("layercode-signature"), raw, secret, time.time()
            )
            if wrong is not None:
                log.warning("layercode: webhook refused: %s", wrong)
                return problem(401, "invalid_signature", wrong)
        try:
            hook = wire.parse_webhook(raw)
        except UnknownWebhook as unknown:
            log.info("layercode: ignored webhook of unknown type %r", unknown.type)
            return SseResponse(_only_end(unknown.turn_id))
        except BadWebhook as bad:
            log.info("layercode: bad webhook: %s", bad)
            return problem(400, "invalid_webhook", str(bad))
        manager = manager_of(request)
        match hook:
            case MessageHook():
                return SseResponse(_answer(manager, hook, settings.layercode_chunking))
            case SessionStartHook():
                return SseResponse(_welcome(manager, hook, welcome, settings.layercode_chunking))
            case SessionEndHook():
                return await _end_session(manager, hook)
            case SessionUpdateHook() | DataHook():
                log.debug("layercode: %s webhook conversation=%s", hook.type, hook.conversation_id)
                return JSONResponse({"ok": True})

    return [Route(PATH, agent, methods=["POST"])]
