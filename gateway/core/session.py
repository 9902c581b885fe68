"""The session and turn state machine.

Feed it client events and provider output; drain :meth:`Session.effects` and carry
them out. At most one turn streams at a time. A turn always ends with exactly one
``response.end``, and no chunk of a turn is emitted after it: provider output for
any turn but the streaming one is dropped by turn id.

History is a tuple of immutable messages, so a request handed to a provider can
never change what the session keeps. :meth:`Session.state` and
:meth:`Session.restore` carry a session across restarts.

Function calls keep a turn open. The model's calls of one provider stream form a
*round*: client functions are sent as ``response.function_call``, server functions
become :class:`~gateway.core.effects.RunTool`, call control is answered at once
(``response.call_control``). When the stream has ended and every call of the round
has its result, the round (the text before the calls, the calls, their results)
enters the history and the same turn asks the model again, which goes on speaking.
A round of call control only ends the turn instead. A call not answered within
``tool_timeout_s`` fails the turn (``tool_timeout``); the deadline is the core's,
with the time given to :meth:`Session.tick` by the shell (:class:`WakeAt`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

from gateway.core.chunker import Chunker, ChunkerConfig, ChunkMode
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.context import ContextBudget, HistoryMeasure
from gateway.core.effects import (
    CancelGeneration,
    Close,
    Effect,
    RunTool,
    SaveState,
    SaveTurn,
    Send,
    StartGeneration,
    WakeAt,
)
from gateway.core.events import (
    CallAction,
    ClientEvent,
    Error,
    FunctionResult,
    Greeted,
    HistoryTruncated,
    Interrupt,
    Latency,
    Ping,
    PlaybackAck,
    Pong,
    ResponseCallControl,
    ResponseCreate,
    ResponseEnd,
    ResponseFunctionCall,
    ResponseFunctionResult,
    ResponseStart,
    ResponseTts,
    ServerEvent,
    SessionEnd,
    SessionEnded,
    SessionReady,
    SessionResync,
    SessionUpdate,
    SessionUpdated,
    SetHistory,
    TranscriptTurn,
    TurnStatus,
    UserDuplicate,
    UserMessage,
)
from gateway.core.history import (
    NO_USAGE,
    Finish,
    FunctionCall,
    GenerationRequest,
    GenerationSettings,
    Message,
    ToolSpec,
    Usage,
)
from gateway.core.records import TurnRecord
from gateway.core.state import STATE_VERSION, LastReply, OpenTurn, SessionState
from gateway.core.tools import CONTROL_TOOLS

_CONTROL_NAMES = frozenset(CONTROL_TOOLS)
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
#: Control characters (but tab and newline) never reach the model.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: How many client message ids are remembered to recognise a resent message.
SEEN_IDS = 256
#: How many times one turn may go back to the model with function results.
MAX_TOOL_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Per-session settings, fixed when the session is made."""

    provider: str
    model: str
    system_instruction: str | None = None
    language: str = "en"
    max_text_chars: int = 4000
    #: Longest ``instructions`` a client may set (``session.update``, ``response.create``).
    max_instructions_chars: int = 8000
    #: The conversation a session may hold, in characters of history: past it a
    #: ``user.message`` gets ``session_full``; a platform's transcript keeps its newest part.
    max_session_chars: int = 200_000
    first_chunk_min_chars: int = 40
    first_chunk_max_chars: int = 120
    max_chunk_chars: int = 300
    chunk_mode: ChunkMode = ChunkMode.SENTENCE
    #: Generation settings every turn starts from (``session.update`` changes them).
    generation: GenerationSettings = GenerationSettings()
    #: How much of the history a turn sends to the model.
    context: ContextBudget = ContextBudget()
    #: Tokens (the providers' totals) a session may use; ``None``: no limit.
    max_session_tokens: int | None = None
    #: ``(language, line)`` pairs: the line spoken when a turn fails, chosen by the
    #: session language (exact tag, then its primary subtag, then ``*``).
    fallback_text: tuple[tuple[str, str], ...] = ()
    #: Server-wide tools (webhooks from ``GATEWAY_TOOLS_FILE``, call control).
    tools: tuple[ToolSpec, ...] = ()
    #: Seconds a function call may stay unanswered before its turn fails.
    tool_timeout_s: float = 30.0


def fallback_line(lines: tuple[tuple[str, str], ...], language: str) -> str | None:
    """The fallback line for ``language`` among ``lines``, if any."""
    table = {tag.lower(): text for tag, text in lines}
    tag = language.lower()
    return table.get(tag) or table.get(tag.split("-")[0]) or table.get("*")


@dataclass(slots=True)
class _Round:
    """The function calls of one provider stream of a turn, and their results."""

    #: Where the round's text starts in the turn's ``parts`` and ``chunks``.
    first_part: int = 0
    first_chunk: int = 0
    calls: list[FunctionCall] = field(default_factory=list)
    #: Results by call id (JSON text), in no order; the history takes call order.
    results: dict[str, str] = field(default_factory=dict)
    #: Call id -> deadline of the calls not answered yet.
    pending: dict[str, float] = field(default_factory=dict)
    #: The provider stream of this round ended.
    streamed: bool = False
    #: A client function was called in a turn whose results come with the next
    #: request (a transcript platform): the round ends the turn.
    ends_turn: bool = False

    @property
    def controls_only(self) -> bool:
        """Every call was call control, and each was carried out (a refused one,
        such as a transfer without a target, goes back to the model)."""
        return all(
            call.name in _CONTROL_NAMES and self.results.get(call.call_id) == _OK
            for call in self.calls
        )


class _Turn:
    """Mutable state of the one streaming turn."""

    __slots__ = (
        "acked",
        "round",
        "rounds",
        "spent",
        "chunker",
        "chunks",
        "fallback",
        "first_chunk_at",
        "first_token_at",
        "id",
        "in_reply_to",
        "parts",
        "started_at",
        "usage",
        "user_text",
    )

    def __init__(
        self,
        turn_id: str,
        in_reply_to: str | None,
        user_text: str | None,
        started_at: float,
        chunker: Chunker,
    ) -> None:
        self.id = turn_id
        self.in_reply_to = in_reply_to
        self.user_text = user_text
        self.started_at = started_at
        self.chunker = chunker
        self.parts: list[str] = []
        self.chunks: list[str] = []
        self.acked = -1
        self.first_token_at: float | None = None
        self.first_chunk_at: float | None = None
        self.usage: Usage | None = None
        #: The last chunk is the fallback line, not the model's text.
        self.fallback = False
        self.round = _Round()
        #: How many rounds of function calls went back to the model.
        self.rounds = 0
        #: Tokens the turn's finished rounds used.
        self.spent: Usage | None = None


#: The result of a call-control tool the adapter will carry out.
_OK = '{"ok":true}'
_DIGITS = re.compile(r"^[0-9*#wW]{1,64}$")


_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


def render(instructions: str | None, variables: tuple[tuple[str, str], ...]) -> str | None:
    """``instructions`` with each ``{{name}}`` replaced by its variable (names not
    given are left as they are)."""
    if instructions is None or not variables or "{{" not in instructions:
        return instructions
    values = dict(variables)
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), instructions)


def _error_output(message: str) -> str:
    """A function result saying the call failed (the model can tell the user)."""
    return orjson.dumps({"error": message}).decode()


def _text_arg(arguments: dict[str, object], name: str) -> str | None:
    value = arguments.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _ms(start: float, end: float | None) -> int | None:
    return None if end is None else max(0, round((end - start) * 1000))


#: Why a turn found open in a restored snapshot ended ``failed``.
CUT_TURN_REASON = "the gateway restarted or lost its store while this turn was streaming"


class Session:
    """One conversation: history, the streaming turn, and the outbound ``seq``."""

    def __init__(self, session_id: str, config: SessionConfig) -> None:
        self.id = session_id
        self._config = config
        self._instructions = config.system_instruction
        self._language = config.language
        self._chunk_mode = config.chunk_mode
        self._history: tuple[Message, ...] = ()
        self._measure = HistoryMeasure()
        self._seq = 0
        self._turns = 0
        self._messages = 0
        self._seen: dict[str, str] = {}
        self._turn: _Turn | None = None
        self._last_reply: LastReply | None = None
        self._last_ordinal: int | None = None
        self._client_acks = False
        self._generation = GenerationSettings()
        self._usage = NO_USAGE
        self._client_tools: tuple[ToolSpec, ...] = ()
        #: Client calls end their turn (set by a ``TranscriptTurn`` with ``tools``).
        self._calls_end_turn = False
        self._variables: tuple[tuple[str, str], ...] = ()
        self._tool_choice: str | None = None
        self._calls = 0
        self._effects: list[Effect] = []
        self.closed = False

    # --- persistence -------------------------------------------------------------

    def state(self) -> SessionState:
        """A snapshot of everything but the event log."""
        turn = self._turn
        return SessionState(
            version=STATE_VERSION,
            language=self._language,
            instructions=self._instructions,
            history=self._history,
            seq=self._seq,
            turns=self._turns,
            messages=self._messages,
            seen_ids=tuple(self._seen.items()),
            open_turn=None
            if turn is None
            else OpenTurn(turn.id, turn.in_reply_to, turn.user_text, turn.started_at),
            last_reply=self._last_reply,
            client_acks=self._client_acks,
            generation=self._generation,
            usage=self._usage,
            ended=self.closed,
            last_ordinal=self._last_ordinal,
            client_tools=self._client_tools,
            variables=self._variables,
        )

    @classmethod
    def restore(
        cls,
        session_id: str,
        config: SessionConfig,
        state: SessionState,
        *,
        last_seq: int,
        open_turn_chunks: tuple[str, ...] = (),
        now: float,
    ) -> Session:
        """Bring a session back from its snapshot and the newest ``seq`` in its log.

        A turn that was streaming when the snapshot was taken cannot go on (its
        provider stream died with the process): it is ended ``failed``, keeping
        the chunks that were sent.
        """
        session = cls(session_id, config)
        session._language = state.language
        session._instructions = state.instructions
        session._history = state.history
        session._seq = max(state.seq, last_seq)
        session._turns = state.turns
        session._messages = state.messages
        session._seen = dict(state.seen_ids)
        session._last_reply = state.last_reply
        session._client_acks = state.client_acks
        session._generation = state.generation
        session._usage = state.usage
        session.closed = state.ended
        session._last_ordinal = state.last_ordinal
        session._client_tools = state.client_tools
        session._variables = state.variables
        if state.open_turn is not None:
            open_turn = state.open_turn
            turn = _Turn(
                open_turn.turn_id,
                open_turn.in_reply_to,
                open_turn.user_text,
                open_turn.started_at,
                session._new_chunker(),
            )
            turn.chunks = list(open_turn_chunks)
            session._end_turn(
                turn,
                "failed",
                now,
                reason="the gateway restarted or lost its store while this turn was streaming",
            )
        return session

    # --- read-only views ---------------------------------------------------------

    @property
    def history(self) -> tuple[Message, ...]:
        return self._history

    @property
    def language(self) -> str:
        return self._language

    @property
    def instructions(self) -> str | None:
        return self._instructions

    @property
    def usage(self) -> Usage:
        """Tokens the session's turns used so far (the providers' own counts)."""
        return self._usage

    @property
    def generation(self) -> GenerationSettings:
        """The generation settings the next turn sends."""
        return self._config.generation.merged(self._generation)

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """The functions the model may call: the server's, then the client's."""
        return (*self._config.tools, *self._client_tools)

    @property
    def pending_calls(self) -> tuple[str, ...]:
        """Ids of the streaming turn's function calls still waiting for a result."""
        return tuple(self._turn.round.pending) if self._turn is not None else ()

    @property
    def streaming_turn_id(self) -> str | None:
        return self._turn.id if self._turn else None

    @property
    def seq(self) -> int:
        """The ``seq`` of the newest session event."""
        return self._seq

    def effects(self) -> list[Effect]:
        """Take the effects produced since the last call, in order."""
        out, self._effects = self._effects, []
        return out

    # --- connection events -------------------------------------------------------

    def ready_event(
        self, resume_token: str, *, resumed: bool = False, seq: int | None = None
    ) -> SessionReady:
        """The ``session.ready`` that greets a client.

        A connection event: ``seq`` says where the client stands (the newest
        ``seq`` it was sent, or its own last ``seq`` when it resumes and the replay
        follows); it is not counted and not logged.
        """
        return SessionReady(
            session_id=self.id,
            seq=self._seq if seq is None else seq,
            resume_token=resume_token,
            provider=self._config.provider,
            model=self._config.model,
            language=self._language,
            resumed=resumed,
        )

    def resync_event(self, seq: int) -> SessionResync:
        """For a resuming client that missed events the log no longer holds: the
        transcript so far, and the ``seq`` it now stands at (a connection event)."""
        return SessionResync(
            session_id=self.id,
            seq=seq,
            transcript=self._history,
            streaming_turn_id=self.streaming_turn_id,
        )

    # --- inputs ------------------------------------------------------------------

    def receive(self, event: ClientEvent, now: float) -> None:
        """Handle one client event."""
        if self.closed:
            return
        match event:
            case UserMessage():
                self._on_user_message(event, now)
            case Interrupt():
                self._on_interrupt(event, now)
            case PlaybackAck():
                self._on_playback_ack(event)
            case ResponseCreate():
                if self._within_budget() and self._instructions_fit(
                    event.instructions, "response.create"
                ):
                    self._start_turn(None, None, now, instructions=event.instructions)
            case SessionUpdate():
                self._on_session_update(event)
            case Ping():
                # A connection event: it does not take a seq or a place in the replay log,
                # so keep-alive pings cannot wear out a session's history.
                self._send(Pong(session_id=self.id, seq=self._seq, id=event.id))
            case SessionEnd():
                self.end("ended by the client", now)
            case FunctionResult():
                if not self._take_result(event.call_id, event.output, now):
                    self.reject(
                        ErrorCode.UNKNOWN_CALL,
                        f"function.result for {event.call_id[:64]!r}: no such call is waiting "
                        "(unknown, already answered, or its turn ended)",
                    )
            case Greeted():
                text = _CONTROL.sub("", event.text).strip()
                if text and not self._history and self._turn is None:
                    self._history = (Message("assistant", text),)
                    self._effects.append(SaveState())
            case SetHistory():
                self._history = self._fit(event.transcript)
                self._last_reply = None
                self._effects.append(SaveState())
            case TranscriptTurn():
                if event.ordinal is not None:
                    if self._last_ordinal is not None and event.ordinal <= self._last_ordinal:
                        return  # stale: a newer response was already asked for
                    self._last_ordinal = event.ordinal
                if not self._within_budget():
                    return
                if self._turn is not None:
                    self._end_turn(
                        self._turn, "superseded", now, reason="a newer response was requested"
                    )
                if event.transcript or not event.keep_history:
                    self._history = self._fit(event.transcript)
                self._last_reply = None
                if event.tools is not None:
                    # A server tool of the same name wins (it is not declared twice).
                    taken = {tool.name for tool in self._config.tools}
                    self._client_tools = tuple(t for t in event.tools if t.name not in taken)
                    self._calls_end_turn = True
                    self._tool_choice = event.tool_choice
                last_user = next(
                    (m.text for m in reversed(self._history) if m.role == "user"), None
                )
                self._start_turn(event.reply_to, last_user, now, instructions=event.instructions)

    def _instructions_fit(self, instructions: str | None, where: str) -> bool:
        limit = self._config.max_instructions_chars
        if instructions is None or len(instructions) <= limit:
            return True
        self.reject(
            ErrorCode.INSTRUCTIONS_TOO_LONG,
            f"{where} instructions have {len(instructions)} characters; the limit is {limit}",
        )
        return False

    def _fit(self, transcript: tuple[Message, ...]) -> tuple[Message, ...]:
        """The newest part of a platform's transcript that fits the session budget."""
        budget, kept = self._config.max_session_chars, 0
        for index in range(len(transcript) - 1, -1, -1):
            kept += len(transcript[index].text)
            if kept > budget:
                return transcript[index + 1 :]
        return transcript

    def reject(
        self, code: ErrorCode, message: str, *, fatal: bool = False, now: float = 0.0
    ) -> None:
        """Answer bad input with an ``error``; a fatal one ends the session."""
        if self.closed:
            return
        self._send(
            Error(session_id=self.id, seq=self._next_seq(), code=code, message=message, fatal=fatal)
        )
        if fatal:
            self.end(f"fatal error: {code}", now, close_code=CloseCode.INTERNAL_ERROR)

    def provider_delta(self, turn_id: str, text: str, now: float) -> None:
        """A piece of the reply for ``turn_id`` arrived."""
        turn = self._turn
        if turn is None or turn.id != turn_id or not text:
            return
        if turn.first_token_at is None:
            turn.first_token_at = now
        turn.parts.append(text)
        for chunk in turn.chunker.push(text):
            self._send_chunk(turn, chunk, now)

    def restart_turn(self, turn_id: str) -> bool:
        """Forget what the provider sent for ``turn_id`` so it can be asked again.

        Allowed only while no chunk of the turn was sent, so that a retry never
        makes the user hear a sentence twice; returns whether the turn was reset.
        """
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return False
        current = turn.round
        if len(turn.chunks) > current.first_chunk or current.calls:
            return False
        del turn.parts[current.first_part :]
        turn.chunker = self._new_chunker()
        if turn.rounds == 0:
            turn.first_token_at = None
        return True

    def provider_call(self, turn_id: str, call: FunctionCall, now: float) -> None:
        """The model called a function in ``turn_id``.

        The text before the call is spoken now (the chunker is flushed). A client
        function is sent as ``response.function_call``, a server one becomes a
        :class:`RunTool`; call control and unknown functions are answered at once.
        """
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        for chunk in turn.chunker.flush():
            self._send_chunk(turn, chunk, now)
        self._calls += 1
        taken = {c.call_id for c in turn.round.calls}
        if not call.call_id or call.call_id in taken or len(call.call_id) > 128:
            call = FunctionCall(
                f"call_{turn.id}_{self._calls}", call.name, call.arguments, call.signature
            )
        current = turn.round
        current.calls.append(call)
        tool = next((t for t in self.tools if t.name == call.name), None)
        try:
            arguments = orjson.loads(call.arguments)
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            current.results[call.call_id] = _error_output("the arguments are not a JSON object")
            return
        if tool is None:
            current.results[call.call_id] = _error_output(f"there is no function {call.name!r}")
            return
        if tool.executor == "control":
            self._call_control(turn, call, arguments)
            return
        if tool.executor == "client" and self._calls_end_turn:
            current.ends_turn = True
        else:
            deadline = now + self._config.tool_timeout_s
            current.pending[call.call_id] = deadline
            self._effects.append(WakeAt(deadline))
        if tool.executor == "server":
            self._effects.append(RunTool(turn.id, call))
        else:
            self._send(
                ResponseFunctionCall(
                    session_id=self.id,
                    seq=self._next_seq(),
                    turn_id=turn.id,
                    call_id=call.call_id,
                    name=call.name,
                    arguments=arguments,
                )
            )

    def tool_finished(self, call_id: str, output: str, now: float) -> None:
        """A server tool's result (JSON text), announced as ``response.function_result``;
        dropped if its turn has ended."""
        turn = self._turn
        if turn is None or call_id not in turn.round.pending:
            return
        name = next((c.name for c in turn.round.calls if c.call_id == call_id), "")
        self._send(
            ResponseFunctionResult(
                session_id=self.id,
                seq=self._next_seq(),
                turn_id=turn.id,
                call_id=call_id,
                name=name,
                output=orjson.loads(output),
            )
        )
        self._take_result(call_id, output, now)

    def tick(self, now: float) -> None:
        """The time is ``now``: fail the streaming turn if a call's deadline passed."""
        turn = self._turn
        if turn is None or not turn.round.pending:
            return
        late = [cid for cid, at in turn.round.pending.items() if at <= now]
        if not late:
            return
        names = ", ".join(c.name for c in turn.round.calls if c.call_id in late)
        self.provider_failed(
            turn.id,
            now,
            message=f"no result for {names} within {self._config.tool_timeout_s:g} s",
            retryable=False,
            detail="tool_timeout",
            code=ErrorCode.TOOL_TIMEOUT,
        )

    def provider_usage(self, turn_id: str, usage: Usage) -> None:
        """The provider counted the tokens of ``turn_id`` (the last count wins)."""
        turn = self._turn
        if turn is not None and turn.id == turn_id:
            turn.usage = usage

    def provider_done(self, turn_id: str, now: float, finish: Finish | None = None) -> None:
        """The provider stream for ``turn_id`` ended, the way ``finish`` says
        (``None``: it just ended, as a normal stop).

        A blocked reply fails (detail ``blocked``) without speaking the rest of
        its text; a reply that stopped for another reason fails (``incomplete``);
        a reply with no text fails (``empty_reply``); a reply cut at the output
        token limit completes with reason ``max_tokens``.
        """
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        reason = "stop" if finish is None else finish.reason
        current = turn.round
        if current.calls and reason != "blocked":
            for chunk in turn.chunker.flush():
                self._send_chunk(turn, chunk, now)
            current.streamed = True
            if turn.usage is not None:
                turn.spent = turn.usage if turn.spent is None else turn.spent + turn.usage
                turn.usage = None
            self._advance(turn, now)
            return
        raw = f" ({finish.raw})" if finish is not None and finish.raw else ""
        if reason == "blocked":
            self.provider_failed(
                turn_id,
                now,
                message=f"the model's safety or policy filter withheld the reply{raw}",
                retryable=False,
                detail="blocked",
            )
            return
        if not any(part.strip() for part in turn.parts[current.first_part :]) and not turn.rounds:
            cut = (
                " before any text: the output token limit is too low"
                if reason == "max_tokens"
                else ""
            )
            self.provider_failed(
                turn_id,
                now,
                message=f"the model sent an empty reply{cut}{raw}",
                retryable=False,
                detail="empty_reply",
            )
            return
        if reason == "other":
            self.provider_failed(
                turn_id,
                now,
                message=f"the model stopped before finishing its reply{raw}",
                retryable=False,
                detail="incomplete",
            )
            return
        for chunk in turn.chunker.flush():
            self._send_chunk(turn, chunk, now)
        self._end_turn(
            turn, "completed", now, reason="max_tokens" if reason == "max_tokens" else None
        )

    def provider_failed(
        self,
        turn_id: str,
        now: float,
        *,
        message: str,
        retryable: bool,
        detail: str | None = None,
        code: ErrorCode = ErrorCode.PROVIDER_ERROR,
    ) -> None:
        """Generating ``turn_id`` failed: say why, then end the turn ``failed``."""
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        self._send(
            Error(
                session_id=self.id,
                seq=self._next_seq(),
                code=code,
                message=message,
                turn_id=turn_id,
                retryable=retryable,
                detail=detail,
            )
        )
        line = fallback_line(self._config.fallback_text, self._language)
        if line:
            self._send_chunk(turn, line, now)
            turn.fallback = True
        self._end_turn(turn, "failed", now, reason=detail or str(code))

    def end(self, reason: str, now: float, *, close_code: int = CloseCode.NORMAL) -> None:
        """End the session: stop the streaming turn, say ``session.ended``, close."""
        if self.closed:
            return
        if self._turn is not None:
            self._end_turn(self._turn, "interrupted", now, reason="session ended")
        self._send(SessionEnded(session_id=self.id, seq=self._next_seq(), reason=reason))
        self.closed = True
        self._effects.append(SaveState())
        self._effects.append(Close(close_code, reason))

    def abandon(self, reason: str, now: float) -> None:
        """The client did not come back: stop generating for nobody.

        The session itself stays (it can be resumed later, with nothing streaming).
        """
        if self._turn is not None:
            self._end_turn(self._turn, "interrupted", now, reason=reason)

    # --- handlers ----------------------------------------------------------------

    def _on_user_message(self, event: UserMessage, now: float) -> None:
        text = _CONTROL.sub("", event.text).strip()
        if not text:
            self.reject(ErrorCode.EMPTY_TEXT, "user.message text is empty")
            return
        if len(text) > self._config.max_text_chars:
            self.reject(
                ErrorCode.TEXT_TOO_LONG,
                f"user.message text has {len(text)} characters; "
                f"the limit is {self._config.max_text_chars}",
            )
            return
        if event.id is not None and event.id in self._seen:
            self._send(
                UserDuplicate(
                    session_id=self.id,
                    seq=self._next_seq(),
                    id=event.id,
                    turn_id=self._seen[event.id],
                )
            )
            return
        if not self._within_budget():
            return
        held = self._measure.chars(self._history)
        if held + len(text) > self._config.max_session_chars:
            self.reject(
                ErrorCode.SESSION_FULL,
                f"the session holds {held} characters of conversation and may hold at most "
                f"{self._config.max_session_chars}; start a new session",
            )
            return
        self._messages += 1
        message_id = event.id if event.id is not None else f"m{self._messages}"
        if self._turn is not None:
            self._end_turn(self._turn, "superseded", now, reason="a new user message arrived")
        self._history = (*self._history, Message("user", text))
        turn_id = self._start_turn(message_id, text, now, instructions=None)
        if event.id is not None:
            self._seen[event.id] = turn_id
            if len(self._seen) > SEEN_IDS:
                del self._seen[next(iter(self._seen))]

    def _on_interrupt(self, event: Interrupt, now: float) -> None:
        turn = self._turn
        if turn is not None and event.turn_id in (None, turn.id):
            heard = event.heard_text
            if heard is None and self._client_acks:
                heard = " ".join(turn.chunks[: turn.acked + 1])
            self._end_turn(
                turn, "interrupted", now, reason="interrupted by the client", heard_text=heard
            )
            return
        last = self._last_reply
        if last is None or event.turn_id != last.turn_id:
            return  # nothing streaming, or an old turn: interrupting is idempotent
        heard = event.heard_text
        if heard is None:
            if not self._client_acks or last.acked + 1 >= len(last.chunks):
                return  # everything was heard (or we cannot know otherwise)
            heard = " ".join(last.chunks[: last.acked + 1])
        self._truncate_last_reply(last, heard.strip())

    def _on_playback_ack(self, event: PlaybackAck) -> None:
        self._client_acks = True
        turn = self._turn
        if turn is not None and turn.id == event.turn_id:
            if event.index >= len(turn.chunks):
                self.reject(
                    ErrorCode.INVALID_FIELD,
                    f"playback.ack index {event.index} of turn {turn.id} was not sent yet",
                )
                return
            turn.acked = max(turn.acked, event.index)
            return
        last = self._last_reply
        if last is not None and last.turn_id == event.turn_id:
            if event.index >= len(last.chunks):
                self.reject(
                    ErrorCode.INVALID_FIELD,
                    f"playback.ack index {event.index} is past the end of turn {last.turn_id}",
                )
                return
            if event.index > last.acked:
                self._last_reply = LastReply(
                    last.turn_id, last.history_index, last.chunks, event.index
                )
                self._effects.append(SaveState())

    def _truncate_last_reply(self, last: LastReply, heard: str) -> None:
        history = list(self._history)
        if heard:
            history[last.history_index] = Message("assistant", heard)
            self._last_reply = LastReply(last.turn_id, last.history_index, (heard,), 0)
        else:
            del history[last.history_index]
            self._last_reply = None
        self._history = tuple(history)
        self._send(
            HistoryTruncated(
                session_id=self.id, seq=self._next_seq(), turn_id=last.turn_id, spoken_text=heard
            )
        )
        self._effects.append(SaveState())

    def _on_session_update(self, event: SessionUpdate) -> None:
        if not self._instructions_fit(event.instructions, "session.update"):
            return
        if event.language is not None and not _LANGUAGE_TAG.match(event.language):
            self.reject(
                ErrorCode.INVALID_FIELD,
                f"session.update language {event.language[:40]!r} is not a language tag "
                "like 'en', 'es-ES' or 'pt-BR'",
            )
            return
        if event.tools is not None:
            server = {tool.name for tool in self._config.tools} | _CONTROL_NAMES
            clash = next((tool.name for tool in event.tools if tool.name in server), None)
            if clash is not None:
                self.reject(
                    ErrorCode.INVALID_TOOL,
                    f"session.update tools: {clash!r} is a server tool of this gateway; "
                    "give the client's function another name",
                )
                return
        if event.generation is not None:
            if (
                event.generation.thinking_level is not None
                and event.generation.thinking_budget is not None
            ):
                self.reject(
                    ErrorCode.INVALID_FIELD,
                    "session.update: set thinking_level or thinking_budget, not both",
                )
                return
            self._generation = self._generation.merged(event.generation)
        if event.tools is not None:
            self._client_tools = event.tools
        if event.variables is not None:
            self._variables = event.variables
        if event.instructions is not None:
            self._instructions = event.instructions.strip() or self._config.system_instruction
        if event.language is not None:
            self._language = event.language.replace("_", "-")
        self._send(
            SessionUpdated(
                session_id=self.id,
                seq=self._next_seq(),
                language=self._language,
                instructions=self._instructions,
                generation=self.generation,
                tools=tuple(tool.name for tool in self._client_tools),
            )
        )
        self._effects.append(SaveState())

    # --- function calls ----------------------------------------------------------

    def _call_control(self, turn: _Turn, call: FunctionCall, arguments: dict[str, object]) -> None:
        """Answer a call-control tool at once and tell the adapter to carry it out."""
        action: CallAction
        to = digits = reason = None
        if call.name == "end_call":
            action = "end_call"
            reason = _text_arg(arguments, "reason")
        elif call.name == "transfer_call":
            action = "transfer_call"
            to = _text_arg(arguments, "to")
            if not to:
                turn.round.results[call.call_id] = _error_output("transfer_call needs 'to'")
                return
        else:
            action = "send_digits"
            digits = _text_arg(arguments, "digits")
            if not digits or not _DIGITS.match(digits):
                turn.round.results[call.call_id] = _error_output(
                    "send_digits needs 'digits' made of 0-9, *, # and w"
                )
                return
        turn.round.results[call.call_id] = _OK
        self._send(
            ResponseCallControl(
                session_id=self.id,
                seq=self._next_seq(),
                turn_id=turn.id,
                call_id=call.call_id,
                action=action,
                to=to,
                digits=digits,
                reason=reason,
            )
        )

    def _take_result(self, call_id: str, output: str, now: float) -> bool:
        """Record the result of a pending call; ``False`` if no such call waits."""
        turn = self._turn
        if turn is None or call_id not in turn.round.pending:
            return False
        del turn.round.pending[call_id]
        turn.round.results[call_id] = output
        self._advance(turn, now)
        return True

    def _advance(self, turn: _Turn, now: float) -> None:
        """Once the round's stream ended and every call has its result: go back to
        the model with them, or (call control only) end the turn."""
        current = turn.round
        if not current.streamed or current.pending:
            return
        if current.ends_turn:
            self._end_turn(turn, "completed", now, reason="function_call")
            return
        if current.controls_only:
            self._end_turn(turn, "completed", now, reason=None)
            return
        if turn.rounds >= MAX_TOOL_ROUNDS:
            self.provider_failed(
                turn.id,
                now,
                message=f"the model called functions in {MAX_TOOL_ROUNDS} rounds without "
                "finishing its reply",
                retryable=False,
                detail="too_many_tool_rounds",
            )
            return
        self._history = (*self._history, *self._round_messages(turn, None))
        turn.rounds += 1
        turn.round = _Round(first_part=len(turn.parts), first_chunk=len(turn.chunks))
        turn.chunker = self._new_chunker()
        self._effects.append(SaveState())
        self._effects.append(StartGeneration(self._request(turn.id, instructions=None)))

    def _round_messages(self, turn: _Turn, text: str | None) -> tuple[Message, ...]:
        """The round as history: the assistant's text and calls, then each result
        (a call left unanswered gets an error result, so every call has one)."""
        current = turn.round
        said = "".join(turn.parts[current.first_part :]) if text is None else text
        results = tuple(
            Message(
                "tool",
                current.results.get(call.call_id)
                or _error_output("no result: the turn ended before it came"),
                call_id=call.call_id,
                name=call.name,
            )
            for call in current.calls
        )
        return (Message("assistant", said, calls=tuple(current.calls)), *results)

    def _request(self, turn_id: str, *, instructions: str | None) -> GenerationRequest:
        return GenerationRequest(
            session_id=self.id,
            turn_id=turn_id,
            system_instruction=render(self._instructions, self._variables),
            messages=self._measure.fit(self._history, self._config.context),
            instructions=instructions,
            language=self._language,
            settings=self.generation,
            tools=self.tools,
            tool_choice=self._tool_choice,
        )

    # --- turns -------------------------------------------------------------------

    def use_chunk_mode(self, mode: ChunkMode) -> None:
        """Cut the replies of turns started from now on in ``mode`` (the route's choice,
        set by its adapter each time it opens the session; not part of the state)."""
        self._chunk_mode = mode

    def _within_budget(self) -> bool:
        """Whether the session may start another turn; if not, say so."""
        limit = self._config.max_session_tokens
        if limit is None or self._usage.total_tokens < limit:
            return True
        self.reject(
            ErrorCode.TOKEN_BUDGET_EXHAUSTED,
            f"this session used {self._usage.total_tokens} tokens; its budget is {limit}: "
            "start a new session",
        )
        return False

    def _new_chunker(self) -> Chunker:
        cfg = self._config
        return Chunker(
            ChunkerConfig(
                language=self._language,
                first_chunk_min_chars=cfg.first_chunk_min_chars,
                first_chunk_max_chars=cfg.first_chunk_max_chars,
                max_chunk_chars=cfg.max_chunk_chars,
                mode=self._chunk_mode,
            )
        )

    def _start_turn(
        self,
        in_reply_to: str | None,
        user_text: str | None,
        now: float,
        *,
        instructions: str | None,
    ) -> str:
        if self._turn is not None:
            self._end_turn(self._turn, "superseded", now, reason="a new response was requested")
        self._turns += 1
        turn = _Turn(f"t{self._turns}", in_reply_to, user_text, now, self._new_chunker())
        self._turn = turn
        self._send(
            ResponseStart(
                session_id=self.id, seq=self._next_seq(), turn_id=turn.id, in_reply_to=in_reply_to
            )
        )
        self._effects.append(SaveTurn(self._record(turn, None, "", None, None, None)))
        self._effects.append(SaveState())
        self._effects.append(StartGeneration(self._request(turn.id, instructions=instructions)))
        return turn.id

    def _send_chunk(self, turn: _Turn, chunk: str, now: float) -> None:
        if turn.first_chunk_at is None:
            turn.first_chunk_at = now
        self._send(
            ResponseTts(
                session_id=self.id,
                seq=self._next_seq(),
                turn_id=turn.id,
                index=len(turn.chunks),
                text=chunk,
            )
        )
        turn.chunks.append(chunk)

    def _end_turn(
        self,
        turn: _Turn,
        status: TurnStatus,
        now: float,
        *,
        reason: str | None,
        heard_text: str | None = None,
    ) -> None:
        self._turn = None
        if status in ("interrupted", "superseded"):
            self._effects.append(CancelGeneration(turn.id))
        model_chunks = turn.chunks[:-1] if turn.fallback else turn.chunks
        text = "".join(turn.parts) or " ".join(model_chunks)
        usage = turn.usage if turn.spent is None else turn.spent + (turn.usage or NO_USAGE)
        if usage is not None:
            self._usage = self._usage + usage
        current = turn.round
        own_chunks = turn.chunks[current.first_chunk :]
        if status == "completed":
            kept = "".join(turn.parts[current.first_part :])
        elif heard_text is not None and not turn.rounds:
            kept = heard_text.strip()
        else:
            kept = " ".join(own_chunks)
        if current.calls:
            at = len(self._history)
            self._history = (*self._history, *self._round_messages(turn, kept))
            self._last_reply = (
                LastReply(turn.id, at, (kept,), 0) if kept and status != "completed" else None
            )
        elif kept:
            self._history = (*self._history, Message("assistant", kept))
            chunks = tuple(own_chunks) if status == "completed" else (kept,)
            acked = turn.acked - current.first_chunk if status == "completed" else 0
            self._last_reply = LastReply(turn.id, len(self._history) - 1, chunks, acked)
        else:
            self._last_reply = None
        if status == "completed":
            spoken = None
        elif turn.rounds:
            spoken = heard_text.strip() if heard_text is not None else " ".join(turn.chunks)
        else:
            spoken = kept
        latency = Latency(
            first_token_ms=_ms(turn.started_at, turn.first_token_at),
            first_chunk_ms=_ms(turn.started_at, turn.first_chunk_at),
            total_ms=_ms(turn.started_at, now) or 0,
        )
        self._send(
            ResponseEnd(
                session_id=self.id,
                seq=self._next_seq(),
                turn_id=turn.id,
                status=status,
                text=text,
                spoken_text=spoken,
                reason=reason,
                latency=latency,
                usage=usage,
            )
        )
        self._effects.append(SaveTurn(self._record(turn, status, text, spoken, reason, now)))
        self._effects.append(SaveState())

    def _record(
        self,
        turn: _Turn,
        status: TurnStatus | None,
        text: str,
        spoken: str | None,
        reason: str | None,
        ended_at: float | None,
    ) -> TurnRecord:
        return TurnRecord(
            session_id=self.id,
            turn_id=turn.id,
            in_reply_to=turn.in_reply_to,
            user_text=turn.user_text,
            status=status,
            text=text,
            spoken_text=spoken,
            reason=reason,
            started_at=turn.started_at,
            ended_at=ended_at,
            first_token_ms=_ms(turn.started_at, turn.first_token_at),
            first_chunk_ms=_ms(turn.started_at, turn.first_chunk_at),
            total_ms=_ms(turn.started_at, ended_at),
        )

    # --- output ------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, event: ServerEvent) -> None:
        self._effects.append(Send(event))
