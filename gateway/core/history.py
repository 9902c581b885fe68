"""Conversation history, and the contract between a turn and a provider.

A turn hands a provider a :class:`GenerationRequest`; the provider streams back text
deltas, the functions the model calls (:class:`FunctionCall`), at most a few
:class:`Usage` reports (the last one counts) and one :class:`Finish` saying how the
reply ended.

A function call and its result live in the history too: an ``assistant`` message
carries the calls it made (``calls``), and each result is a ``tool`` message (its
``text`` the result as JSON, ``call_id`` and ``name`` saying what it answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]

#: How a reply ended, whatever the provider calls it: ``stop`` (the model was
#: done), ``max_tokens`` (cut at the output token limit), ``blocked`` (withheld by a
#: safety or policy filter), ``other`` (the model stopped for another reason, e.g. a
#: malformed tool call).
FinishReason = Literal["stop", "max_tokens", "blocked", "other"]

#: Gemini thinking levels (``minimal`` is for Flash models only).
ThinkingLevel = Literal["minimal", "low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The model asked for a function: ``arguments`` is a JSON object as text.

    ``call_id`` is unique in the session; ``signature`` is the provider's opaque
    token for the call (Gemini's ``thoughtSignature``), sent back with it in the
    history as the provider requires.
    """

    call_id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; ``parameters`` is a JSON Schema (an object).

    ``executor`` says who runs it: the ``client`` (``response.function_call`` on
    the native protocol), the ``server`` (a webhook from ``GATEWAY_TOOLS_FILE``), or
    ``control`` (built-in call control, carried out by the platform adapter).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    executor: Literal["client", "server", "control"] = "client"


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation, as the model should see it.

    An ``assistant`` message may carry the function ``calls`` it made; a ``tool``
    message is one call's result (``text`` is JSON, ``call_id``/``name`` the call).
    """

    role: Role
    text: str
    calls: tuple[FunctionCall, ...] = ()
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """How the model should generate; ``None`` leaves a setting to the provider.

    ``thinking_level`` and ``thinking_budget`` are Gemini's (other providers
    ignore them); at most one of them is set.
    """

    temperature: float | None = None
    max_output_tokens: int | None = None
    thinking_level: ThinkingLevel | None = None
    thinking_budget: int | None = None

    def merged(self, override: GenerationSettings) -> GenerationSettings:
        """These settings with every field ``override`` sets replacing ours.

        Setting a thinking level drops a budget and the other way round, as the
        two cannot be sent together.
        """
        level, budget = self.thinking_level, self.thinking_budget
        if override.thinking_level is not None:
            level, budget = override.thinking_level, None
        if override.thinking_budget is not None:
            level, budget = None, override.thinking_budget
        return GenerationSettings(
            temperature=self.temperature if override.temperature is None else override.temperature,
            max_output_tokens=self.max_output_tokens
            if override.max_output_tokens is None
            else override.max_output_tokens,
            thinking_level=level,
            thinking_budget=budget,
        )


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything a provider needs to generate one assistant turn.

    ``messages`` is a tuple, so a provider can never mutate the session's history
    through a shared reference. It ends with the user's message, except for a turn
    the assistant starts by itself (``response.create``), where ``instructions``
    say what to do. It may be the newest part of the session's history only (see
    :func:`gateway.core.context.fit_history`).
    """

    session_id: str
    turn_id: str
    system_instruction: str | None
    messages: tuple[Message, ...]
    instructions: str | None = None
    language: str | None = None
    settings: GenerationSettings = GenerationSettings()
    #: The functions the model may call in this turn.
    tools: tuple[ToolSpec, ...] = ()
    #: ``auto`` (``None``), ``none``, ``required`` or the one function name to call.
    tool_choice: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call used, as the provider counted them.

    ``total_tokens`` is the provider's own total (it may include thinking tokens
    beyond input plus output); ``cached_tokens`` and ``thinking_tokens`` are
    ``None`` when the provider does not say.
    """

    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int | None = None
    thinking_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=_add(self.cached_tokens, other.cached_tokens),
            thinking_tokens=_add(self.thinking_tokens, other.thinking_tokens),
        )


NO_USAGE = Usage(input_tokens=0, output_tokens=0, total_tokens=0)


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


@dataclass(frozen=True, slots=True)
class Finish:
    """How the reply ended; ``raw`` is the provider's own name for it (``SAFETY``,
    ``length``...), for logs and error messages."""

    reason: FinishReason
    raw: str | None = None


#: What a provider stream yields.
StreamItem = str | Usage | Finish | FunctionCall
