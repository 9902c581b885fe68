"""Markdown to speakable text, streaming.

:class:`SpeechFilter` takes an LLM's raw text deltas and returns the speakable text
each one releases: emphasis markers, inline-code backticks, heading/bullet/quote
markers and link targets are dropped, code blocks and rules vanish, table cells are
read as a list. The output uses single spaces and uses ``"\\n"`` only as a hard
boundary (a line that had text ended), which the chunker never lets a chunk cross.

Whatever needs lookahead (an emphasis run, ``[text](url)``, ``<tag>``, a line's block
marker) is held back until the text decides it, within a bounded window, so the output
depends only on the text, never on where the deltas were cut.
"""

from __future__ import annotations

import re
from types import MappingProxyType

_PLAIN = re.compile(r"[^\s*_`\[!<|\\~]+(?: [^\s*_`\[!<|\\~]+)*")
_CODE_PLAIN = re.compile(r"[^\s`]+(?: [^\s`]+)*")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace but a line break
# Marker runs are read at most 32 at a time, so none waits on unbounded text.
_RUNS = MappingProxyType({ch: re.compile(re.escape(ch) + "{1,32}") for ch in "*_`~"})

# A line's block marker is decided on its "head": up to its first other character.
_HEAD_CHARS = frozenset(" \t#>-*+•_0123456789.)|:`~[]xX")
_HEAD_STOP = re.compile(r"[^ \t#>\-*+•_0-9.)|:`~\[\]xX]")
_HEAD_MAX = 64
_RULE = re.compile(r"[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*(?:\n|\Z)")
_TABLE_RULE = re.compile(r"[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+[ \t]*(?::?-+:?[ \t]*)?(?:\n|\Z)")
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]+|(?=\n)|\Z)")
_QUOTE = re.compile(r"[ \t]{0,3}>[ \t]?")
_BULLET = re.compile(r"[ \t]*[-*+•][ \t]+(?:\[[ xX]\][ \t]+)?")
_INDENT = re.compile(r"[ \t]*")

_LINK_MAX = 200  # characters of link text held back waiting for "]"
_URL_MAX = 500  # characters of "(url)" held back waiting for ")"
_TAG_MAX = 200
_LINK_TEXT = re.compile(r"[^\[\]\n]*\]")
_LINK_TARGET = re.compile(r"\((?:[^()\n]|\([^()\n]*\))*\)")
_ANGLE = re.compile(r"[^<>\n]*>")
_AUTOLINK = re.compile(r"(?:https?://|mailto:)[^\s<>]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TAG = re.compile(
    r"/?(a|abbr|b|br|code|del|div|em|h[1-6]|hr|i|img|ins|kbd|li|mark|ol|p|pre|s|small|span"
    r"|strong|sub|sup|table|tbody|td|th|thead|tr|u|ul)\b[^<>]*",
    re.IGNORECASE,
)
_BLOCK_TAGS = frozenset(
    ("br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p", "pre")
    + ("table", "td", "th", "tr", "ul")
)
_ESCAPABLE = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_WAIT = -1


def _run_end(pattern: re.Pattern[str], s: str, i: int) -> int:
    m = pattern.match(s, i)
    return m.end() if m else i + 1


def _literal_delimiter(ch: str, length: int, before: str, after: str) -> bool:
    """Whether a ``*``/``_`` run is text rather than an emphasis marker."""
    if before.isspace() and after.isspace():
        return True  # "2 * 3"
    if ch == "_":
        return before.isalnum() and after.isalnum()  # snake_case
    return length == 1 and before.isdigit() and after.isdigit()  # 5*3


class SpeechFilter:
    """Streaming markdown-to-speech pass for one reply (``feed`` ... ``finish``)."""

    __slots__ = (
        "_bol",
        "_code",
        "_fence",
        "_fence_len",
        "_last",
        "_line_start",
        "_out",
        "_pending",
        "_prev",
        "_sep",
        "_skip_line",
        "_space",
    )

    def __init__(self) -> None:
        self._out: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._pending = ""  # raw text not decided yet
        self._line_start = True  # the block marker of this line is not decided yet
        self._skip_line = False  # drop the rest of this line (rule, fence line)
        self._fence = ""  # inside a code block: its fence character
        self._fence_len = 0
        self._code = 0  # inside an inline code span: its backtick count
        self._prev = "\n"  # last raw character, for emphasis flanking
        self._space = False  # a space is due before the next text
        self._sep = False  # a table cell separator is due before the next text
        self._bol = True  # nothing emitted since the last boundary
        self._last = "\n"  # last character emitted

    def feed(self, text: str) -> str:
        """Take a raw delta; return the speakable text it releases (maybe "")."""
        if not text:
            return ""
        self._pending += text
        self._run(final=False)
        return self._take()

    def finish(self) -> str:
        """End of reply: release everything held back, then reset for the next reply."""
        self._run(final=True)
        out = self._take()
        self._reset()
        return out

    def _take(self) -> str:
        out = "".join(self._out)
        self._out.clear()
        return out

    def _emit(self, text: str) -> None:
        if self._sep:
            if not self._bol:
                self._out.append(" " if self._last in ".,;:!?" else ", ")
            self._sep = self._space = False
        elif self._space:
            if not self._bol:
                self._out.append(" ")
            self._space = False
        self._out.append(text)
        self._bol = False
        self._last = text[-1]

    def _newline(self) -> None:
        self._space = self._sep = self._skip_line = False
        self._code = 0
        self._line_start = True
        self._prev = "\n"
        if not self._fence and not self._bol:
            self._out.append("\n")
            self._bol = True

    def _run(self, final: bool) -> None:
        i = 0
        while i < len(s := self._pending):
            if self._skip_line:
                j = s.find("\n", i)
                if j < 0:
                    i = len(s)
                    break
                self._skip_line = False
                i = j
            if s[i] == "\n":
                self._newline()
                i += 1
                continue
            if self._line_start:
                i = self._head(s, i, final)
            elif (m := (_CODE_PLAIN if self._code else _PLAIN).match(s, i)) is not None:
                self._emit(m.group())
                self._prev = s[m.end() - 1]
                i = m.end()
            else:
                i = self._special(s, i, final)
            if i == _WAIT:
                return
        self._pending = self._pending[i:]

    def _head(self, s: str, i: int, final: bool) -> int:
        """Decide the block marker at the start of a line; consume it."""
        if s[i] not in _HEAD_CHARS:
            self._line_start = False
            self._skip_line = bool(self._fence)
            return i
        end = min(len(s), i + _HEAD_MAX)
        if (stop := _HEAD_STOP.search(s, i, end)) is not None:
            head = s[i : stop.end()]
        elif len(s) - i >= _HEAD_MAX or final:
            head = s[i:end]
        else:
            return self._hold(i)
        fence = _FENCE.match(head)
        if self._fence:  # only a closing fence matters
            marker = fence.group(1) if fence else ""
            if marker[:1] == self._fence and len(marker) >= self._fence_len:
                self._fence = ""
            self._line_start = False
            self._skip_line = True
            return i
        if fence or _RULE.match(head) or _TABLE_RULE.match(head):
            if fence:
                self._fence = fence.group(1)[0]
                self._fence_len = len(fence.group(1))
            self._line_start = False
            self._skip_line = True
            return i
        if (m := _QUOTE.match(head)) is not None:
            self._prev = " "
            return i + m.end()  # still at the line's start: "> - item"
        m = _HEADING.match(head) or _BULLET.match(head) or _INDENT.match(head)
        self._line_start = False
        self._prev = " "
        return i + (m.end() if m else 0)

    def _hold(self, i: int) -> int:
        self._pending = self._pending[i:]
        return _WAIT

    def _special(self, s: str, i: int, final: bool) -> int:
        """Handle the character at ``i`` that plain text stopped at."""
        ch = s[i]
        if ch.isspace():
            self._space = True
            self._prev = " "
            return _run_end(_SPACES, s, i)
        if ch in "*_`~":
            j = _run_end(_RUNS[ch], s, i)
            if j == len(s) and not final:
                return self._hold(i)
            after = s[j] if j < len(s) else "\n"
            if ch == "`":
                if not self._code:
                    self._code = j - i
                elif j - i == self._code:
                    self._code = 0
            elif (ch == "~" and j - i == 1) or (
                ch != "~" and _literal_delimiter(ch, j - i, self._prev, after)
            ):
                self._emit(s[i:j])
            self._prev = ch
            return j
        if ch == "|":
            self._sep = True
            self._prev = ch
            return i + 1
        if i + 1 == len(s) and not final:
            return self._hold(i)
        nxt = s[i + 1] if i + 1 < len(s) else ""
        if ch == "\\":
            if nxt in _ESCAPABLE:
                self._emit(nxt)
                self._prev = nxt
                return i + 2
            if nxt == "\n":
                return i + 1  # a hard line break
        elif ch == "[" or (ch == "!" and nxt == "["):
            return self._link(s, i, final)
        elif ch == "<" and (nxt.isalpha() or nxt == "/"):
            return self._angle(s, i, final)
        return self._literal(i, ch)

    def _literal(self, i: int, ch: str) -> int:
        self._emit(ch)
        self._prev = ch
        return i + 1

    def _link(self, s: str, start: int, final: bool) -> int:
        """``[text](url)`` and ``![alt](url)`` become their text; anything else stays."""
        i = start + 1 if s[start] == "!" else start
        text = _LINK_TEXT.match(s, i + 1, i + 1 + _LINK_MAX)
        if text is None:
            window = s[i + 1 : i + 1 + _LINK_MAX]
            if final or len(window) >= _LINK_MAX or "[" in window or "\n" in window:
                return self._literal(start, s[start])
            return self._hold(start)
        j = text.end()
        if j == len(s):
            return self._literal(start, s[start]) if final else self._hold(start)
        if s[j] != "(":
            return self._literal(start, s[start])
        target = _LINK_TARGET.match(s, j, j + _URL_MAX)
        if target is None:
            window = s[j : j + _URL_MAX]
            if final or len(window) >= _URL_MAX or "\n" in window:
                return self._literal(start, s[start])
            return self._hold(start)
        self._pending = s[:start] + s[i + 1 : j - 1] + s[target.end() :]
        return start

    def _angle(self, s: str, i: int, final: bool) -> int:
        """``<https://...>`` becomes the address; known HTML tags are dropped."""
        m = _ANGLE.match(s, i + 1, i + 1 + _TAG_MAX)
        if m is None:
            window = s[i + 1 : i + 1 + _TAG_MAX]
            if final or len(window) >= _TAG_MAX or "<" in window or "\n" in window:
                return self._literal(i, "<")
            return self._hold(i)
        inner = s[i + 1 : m.end() - 1]
        if _AUTOLINK.fullmatch(inner):
            self._emit(inner)
            self._prev = inner[-1]
        elif (tag := _TAG.fullmatch(inner)) is not None:
            if tag.group(1).lower() in _BLOCK_TAGS:
                self._space = True
                self._prev = " "
        else:
            return self._literal(i, "<")
        return m.end()


def to_speech(text: str) -> str:
    """Whole-text form of :class:`SpeechFilter` (for tests and one-off use)."""
    speech = SpeechFilter()
    return speech.feed(text) + speech.finish()
