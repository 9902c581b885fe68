"""The session HTTP API: create, list, read and delete sessions; health and readiness.

Callers see only their own client sessions (all client sessions with
authentication off); platform sessions are listed, read and deleted only with an
admin key (``GATEWAY_ADMIN_KEYS``). Every summary says its ``kind`` (``client``,
``twilio``, ``retell``, ``layercode``); see :mod:`gateway.tenants`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import __version__
from gateway.auth import ADMIN, Principal
from gateway.core.records import TurnRecord
from gateway.core.state import decode_state
from gateway.errors import AuthError, StateError
from gateway.guard import Guard
from gateway.responses import problem
from gateway.sessions import SessionManager, TooManySessions
from gateway.stores.base import SessionMeta, SessionStore, StoreError
from gateway.tenants import CLIENT_KIND, address_principal, session_kind

MAX_PAGE = 100
DEFAULT_PAGE = 20


def _encode_cursor(meta: SessionMeta) -> str:
    raw = orjson.dumps([meta.created_at, meta.session_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, session_id = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise ValueError("cursor is not one this API returned") from exc
    if not isinstance(created_at, int | float) or not isinstance(session_id, str):
        raise ValueError("cursor is not one this API returned")
    return float(created_at), session_id


def _usage(state: bytes) -> dict[str, Any] | None:
    """The session's token totals from its stored state (``None`` if unreadable)."""
    try:
        return asdict(decode_state(state).usage)
    except StateError:
        return None


def _turn(record: TurnRecord) -> dict[str, Any]:
    return {
        "turn_id": record.turn_id,
        "in_reply_to": record.in_reply_to,
        "user_text": record.user_text,
        "status": record.status or "streaming",
        "text": record.text,
        "spoken_text": record.spoken_text,
        "reason": record.reason,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "latency": {
            "first_token_ms": record.first_token_ms,
            "first_chunk_ms": record.first_chunk_ms,
            "total_ms": record.total_ms,
        },
    }


def _caller(request: Request) -> Principal | None | JSONResponse:
    """The principal (``None`` with authentication off), or the refusal."""
    guard: Guard = request.app.state.guard
    try:
        return guard.check_http(request)
    except AuthError as refused:
        return JSONResponse(
            {"error": {"code": refused.code, "message": refused.message}},
            status_code=refused.status,
            headers={"WWW-Authenticate": "Bearer"} if refused.status == 401 else None,
        )


def _is_admin(caller: Principal | None) -> bool:
    return caller is not None and caller.method == ADMIN


def _visible(meta: SessionMeta, caller: Principal | None) -> bool:
    """Admins see every session; others only client sessions, and with
    authentication on only their own."""
    if _is_admin(caller):
        return True
    if session_kind(meta.session_id, meta.principal) != CLIENT_KIND:
        return False
    return caller is None or meta.principal == caller.name


async def _visible_page(
    store: SessionStore, caller: Principal | None, want: int, before: tuple[float, str] | None
) -> list[SessionMeta]:
    """Up to ``want`` sessions the caller may see, newest first, older than ``before``.

    With authentication off the store's page holds other namespaces' sessions too;
    they are skipped, reading on until the page is full or the store is exhausted.
    """
    owner = caller.name if caller is not None and not _is_admin(caller) else None
    found: list[SessionMeta] = []
    while len(found) < want:
        batch = await store.list_sessions(limit=want, before=before, principal=owner)
        found.extend(m for m in batch if _visible(m, caller))
        if len(batch) < want:
            break
        before = (batch[-1].created_at, batch[-1].session_id)
    return found[:want]


def api_routes(manager_of: Any, store_of: Any) -> list[Route]:
    """Routes; ``manager_of(request)`` and ``store_of(request)`` find the shared parts."""

    def summary(meta: SessionMeta, request: Request) -> dict[str, Any]:
        manager: SessionManager = manager_of(request)
        return {
            "session_id": meta.session_id,
            "kind": session_kind(meta.session_id, meta.principal),
            "created_at": meta.created_at,
            "updated_at": meta.updated_at,
            "live": manager.live(meta.session_id) is not None,
        }

    async def create_session(request: Request) -> Response:
        caller = _caller(request)
        if isinstance(caller, Response):
            return caller
        if _is_admin(caller):
            return problem(403, "admin_key_not_allowed", "admin keys cannot own sessions")
        manager: SessionManager = manager_of(request)
        owner = caller.name if caller is not None else address_principal(request)
        try:
            session_id, token, created_at = await manager.create(principal=owner)
        except TooManySessions as exc:
            return problem(429, "too_many_sessions", str(exc))
        return JSONResponse(
            {
                "session_id": session_id,
                "resume_token": token,
                "created_at": created_at,
                "ws_path": f"/ws?session_id={session_id}&resume_token={token}&last_seq=0",
            },
            status_code=201,
        )

    async def list_sessions(request: Request) -> Response:
        caller = _caller(request)
        if isinstance(caller, Response):
            return caller
        store: SessionStore = store_of(request)
        try:
            limit = int(request.query_params.get("limit", DEFAULT_PAGE))
        except ValueError:
            return problem(400, "invalid_limit", "limit must be an integer")
        if not 1 <= limit <= MAX_PAGE:
            return problem(400, "invalid_limit", f"limit must be between 1 and {MAX_PAGE}")
        before = None
        if cursor := request.query_params.get("cursor"):
            try:
                before = _decode_cursor(cursor)
            except ValueError as exc:
                return problem(400, "invalid_cursor", str(exc))
        page = await _visible_page(store, caller, limit + 1, before)
        more = len(page) > limit
        page = page[:limit]
        return JSONResponse(
            {
                "sessions": [summary(meta, request) for meta in page],
                "next_cursor": _encode_cursor(page[-1]) if more else None,
            }
        )

    async def get_session(request: Request) -> Response:
        caller = _caller(request)
        if isinstance(caller, Response):
            return caller
        store: SessionStore = store_of(request)
        session_id = request.path_params["session_id"]
        stored = await store.get(session_id)
        if stored is None or not _visible(stored.meta, caller):
            return problem(404, "unknown_session", "no such session")
        turns = await store.list_turns(session_id)
        return JSONResponse(
            {
                **summary(stored.meta, request),
                "usage": _usage(stored.state),
                "turns": [_turn(t) for t in turns],
            }
        )

    async def delete_session(request: Request) -> Response:
        caller = _caller(request)
        if isinstance(caller, Response):
            return caller
        manager: SessionManager = manager_of(request)
        store: SessionStore = store_of(request)
        session_id = request.path_params["session_id"]
        stored = await store.get(session_id)
        if stored is None or not _visible(stored.meta, caller):
            return problem(404, "unknown_session", "no such session")
        if not await manager.delete(session_id):
            return problem(404, "unknown_session", "no such session")
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(request: Request) -> Response:
        store: SessionStore = store_of(request)
        try:
            await store.ping()
        except StoreError:
            return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return [
        Route("/sessions", create_session, methods=["POST"]),
        Route("/sessions", list_sessions, methods=["GET"]),
        Route("/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/sessions/{session_id}", delete_session, methods=["DELETE"]),
        Route("/health", health),
        Route("/ready", ready),
    ]
