"""The bounded context: which part of a long history is sent to the model.

The full history stays in the session (and the store); a turn sends only its
newest part that fits a budget, so that the request, its cost and the time to
the first word stay flat however long the conversation gets. The system
instructions travel separately and are always sent.

The cut is made only before a user message, oldest first: an assistant's reply
(and whatever belongs to it, such as a tool call and its result) is never split
from the user message it answers, and the model always sees a conversation that
starts with the user. The last user message is always kept, even over budget.
Tokens are estimated (about four characters each, plus a few per message), which
is close enough for a budget and needs no tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.history import Message

#: Estimated tokens a message costs beyond its text (role, separators).
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True, slots=True)
class ContextBudget:
    """At most ``max_tokens`` estimated tokens and ``max_messages`` messages
    (``None``: no such limit)."""

    max_tokens: int | None = None
    max_messages: int | None = None


def estimate_tokens(message: Message) -> int:
    """A rough token count for ``message``."""
    chars = len(message.text) + sum(len(c.name) + len(c.arguments) for c in message.calls)
    return -(-chars // 4) + MESSAGE_OVERHEAD_TOKENS


def fit_history(messages: Sequence[Message], budget: ContextBudget) -> tuple[Message, ...]:
    """The newest messages of ``messages`` within ``budget``, cut before a user message.

    Costs time in proportion to what is kept, not to the whole history.
    """
    count = len(messages)
    max_tokens, max_messages = budget.max_tokens, budget.max_messages
    if max_tokens is None and max_messages is None:
        return tuple(messages)
    start = count  # the oldest message kept so far, at a user message
    used = 0
    for index in range(count - 1, -1, -1):
        used += estimate_tokens(messages[index])
        within = (max_tokens is None or used <= max_tokens) and (
            max_messages is None or count - index <= max_messages
        )
        if not within:
            break
        if messages[index].role == "user":
            start = index
    else:
        return tuple(messages)  # everything fits
    if start == count:
        # Not even the last exchange fits: keep it from its user message anyway.
        start = next((i for i in range(count - 1, -1, -1) if messages[i].role == "user"), 0)
    return tuple(messages[start:])
