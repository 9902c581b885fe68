"""What the session core asks its shell to do.

The core decides *what* happens; the asyncio shell decides *how*. Effects are
drained in order with :meth:`gateway.core.session.Session.effects`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.events import ServerEvent
from gateway.core.history import FunctionCall, GenerationRequest
from gateway.core.records import TurnRecord


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver a server event to the client (session events after they are stored)."""

    event: ServerEvent


@dataclass(frozen=True, slots=True)
class StartGeneration:
    """Start streaming a reply for ``request.turn_id``."""

    request: GenerationRequest


@dataclass(frozen=True, slots=True)
class CancelGeneration:
    """Stop the provider stream of a turn that has ended early."""

    turn_id: str


@dataclass(frozen=True, slots=True)
class SaveTurn:
    """Store this turn record (made at the start and at the end of a turn)."""

    record: TurnRecord


@dataclass(frozen=True, slots=True)
class SaveState:
    """The session's snapshot changed: store it with the events sent so far."""


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run the server tool ``call`` (a webhook) and report its result with
    :meth:`~gateway.core.session.Session.tool_finished`."""

    turn_id: str
    call: FunctionCall


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call :meth:`~gateway.core.session.Session.tick` at (or soon after) ``at``
    (the session's clock): a deadline of a pending function call."""

    at: float


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client connection once everything before this effect was sent."""

    code: int
    reason: str


Effect = Send | StartGeneration | CancelGeneration | SaveTurn | SaveState | RunTool | WakeAt | Close
