"""Streaming sentence chunker: cuts an LLM's text deltas into speakable TTS chunks.

Two passes, both incremental: :class:`~gateway.core.speech.SpeechFilter` turns markdown
into speakable text where ``"\\n"`` marks a hard boundary (a line ended), then
:class:`Chunker` scans that text for end marks. At each one it consumes the whole
terminator run (``?!``, ``...``, ``？！``) and the closers after it (``" ” ) 」``), then
decides with the least lookahead that settles it: the next character, or the next whole
word when the token before a dot looks like an abbreviation. A decision that needs text
not received yet waits, so every chunk depends only on the text, never on where the
deltas were cut. Emitted text leaves the buffer and scanning resumes where it stopped,
so the work per delta does not grow with the reply.

:class:`ChunkMode` trades whole sentences for time to first audio, for platforms that
speak text as it comes and chunk it for their own TTS (Twilio, Retell, OpenAI-compatible
hooks): ``clause`` also cuts after a clause mark (``, ; : — …`` before a space, ``，、``)
once a chunk has ``clause_min_chars``; ``word`` also releases, on every delta, all the
speakable text up to the last complete word. Chunks then depend on the delta cuts,
but never split a word, never cross a line break, and lose or repeat no text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gateway.core.languages import Abbrev, LanguageRules, rules_for
from gateway.core.speech import SpeechFilter

_CANDIDATE = re.compile(r"[.!?…‽。！？｡．।॥؟۔\n]")
# Runs and lookahead words are capped so that no decision waits on unbounded text.
_TERMINATOR_RUN = re.compile(r"[.!?…‽。！？｡．।॥؟۔]{1,16}")
_CLOSER_RUN = re.compile(r"[\"'”’»)\]}」』）】〉》›]{0,8}")
_OPENER_RUN = re.compile(r"[\"'“‘«„‚(\[{¿¡]{0,8}")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_WORD_MAX = 40
_NON_SPACE = re.compile(r"\S")
_BREAK = re.compile(r"[ \n]")
_CLAUSE = re.compile(r"(?:[,;:—–]|\.\.\.|…)(?=\s)|[，、；：]")
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_CJK_TERMINATORS = frozenset("。！？｡．")
_QUESTION = frozenset("?!‽।॥؟۔")  # marks that end a sentence whatever the token before
_OPENERS = "\"'“‘«„‚([{¿¡"

# What starts the text after an end mark (skipping opening quotes and brackets).
_UPPER, _LOWER, _DIGIT, _LETTER, _SYMBOL, _INVERTED = range(6)
_WAIT = -1


class ChunkMode(StrEnum):
    """How eagerly a reply is released (each mode cuts wherever the one before does)."""

    SENTENCE = "sentence"  # whole sentences: for clients that speak each chunk on its own
    CLAUSE = "clause"  # also after a clause mark
    WORD = "word"  # also up to the last complete word on every delta


@dataclass(frozen=True, slots=True)
class ChunkerConfig:
    """How a reply is cut. Lengths count characters of speakable text."""

    language: str = "en"  # BCP-47 tag or bare code: steers the abbreviation tables
    first_chunk_min_chars: int = 40  # a clause cut for the first chunk only past this
    first_chunk_max_chars: int = 120  # first sentence longer than this: cut it early
    max_chunk_chars: int = 300  # longer chunks are cut at a clause, else a word
    mode: ChunkMode = ChunkMode.SENTENCE
    clause_min_chars: int = 1  # clause and word modes: no chunk shorter than this

    def __post_init__(self) -> None:
        if not 0 < self.first_chunk_min_chars <= self.first_chunk_max_chars:
            raise ValueError("need 0 < first_chunk_min_chars <= first_chunk_max_chars")
        if self.first_chunk_max_chars > self.max_chunk_chars:
            raise ValueError("need first_chunk_max_chars <= max_chunk_chars")
        if not 0 < self.clause_min_chars <= self.max_chunk_chars:
            raise ValueError("need 0 < clause_min_chars <= max_chunk_chars")


def _match_end(pattern: re.Pattern[str], s: str, i: int) -> int:
    """End of ``pattern`` (one that can match empty) matched at ``i``."""
    m = pattern.match(s, i)
    return m.end() if m else i


def _start_class(buf: str, i: int, final: bool) -> int:
    """Classify the text starting at ``i`` (a non-space), past opening quotes/brackets."""
    j = _match_end(_OPENER_RUN, buf, i)
    if j > i and buf[j - 1] in "¿¡":
        return _INVERTED
    if j == len(buf):
        return _SYMBOL if final else _WAIT
    ch = buf[j]
    if ch.isupper():
        return _UPPER
    if ch.islower():
        return _LOWER
    if ch.isdigit():
        return _DIGIT
    return _LETTER if ch.isalpha() else _SYMBOL


def _next_word(buf: str, i: int, final: bool) -> str | None:
    """The whole word starting at ``i`` past openers, or None until it is complete."""
    j = _match_end(_OPENER_RUN, buf, i)
    m = _WORD.match(buf, j, j + _WORD_MAX)
    end = m.end() if m else j
    complete = final or end == j + _WORD_MAX  # a longer word is no abbreviation's partner
    if not complete and (end == len(buf) or (end == len(buf) - 1 and buf[end] in "'’")):
        return None
    return m.group() if m else ""


def _token_start(buf: str, i: int) -> int:
    return buf.rfind(" ", 0, i) + 1


def _dotted_token_before(buf: str, ts: int) -> str | None:
    """The token ending with ". " right before ``ts``, lower-cased, without its dot."""
    if ts < 2 or buf[ts - 2] != "." or buf[ts - 1] != " ":
        return None
    return buf[_token_start(buf, ts - 2) : ts - 2].lstrip(_OPENERS).lower()


def _speakable(chunk: str) -> bool:
    return any(ch.isalnum() for ch in chunk)


def _is_cjk(ch: str) -> bool:
    return ch >= "\u2e80" and ch.isalpha()


class Chunker:
    """Cuts one reply's text deltas into sentence-sized speakable chunks."""

    __slots__ = ("_buf", "_config", "_first", "_pos", "_rules", "_speech")

    def __init__(self, config: ChunkerConfig | None = None) -> None:
        self._config = config or ChunkerConfig()
        self._rules: LanguageRules = rules_for(self._config.language)
        self._speech = SpeechFilter()
        self._buf = ""  # speakable text not emitted yet; starts at a non-space
        self._pos = 0  # candidates before this index are decided: no boundary
        self._first = True  # no chunk emitted yet in this reply

    def push(self, delta: str) -> list[str]:
        """Feed one delta; return the chunks it completed (often none)."""
        text = self._speech.feed(delta)
        if not text:
            return []
        self._append(text)
        return self._scan(final=False)

    def flush(self) -> list[str]:
        """End of reply: return everything left, then reset for the next reply."""
        self._append(self._speech.finish())
        chunks = self._scan(final=True)
        self._buf = ""
        self._pos = 0
        self._first = True
        return chunks

    def _append(self, text: str) -> None:
        if self._buf:
            self._buf += text
        else:
            self._buf = text.lstrip()
            self._pos = 0

    def _scan(self, final: bool) -> list[str]:
        chunks: list[str] = []
        while self._buf:
            end = self._next_end(final)
            if end == _WAIT:
                break
            self._take(end, chunks)
        if not final and self._config.mode is ChunkMode.WORD and self._buf:
            self._release_words(chunks)
        return chunks

    def _take(self, end: int, chunks: list[str]) -> None:
        """Cut the buffer at ``end``; keep the head as a chunk if it is speakable."""
        buf = self._buf
        chunk = buf[:end].strip()
        self._buf = buf[end:].lstrip()
        self._pos = 0
        if _speakable(chunk):
            chunks.append(chunk)
            self._first = False

    def _release_words(self, chunks: list[str]) -> None:
        """Word mode: emit the buffer up to its last complete word, if that says something.

        The word at the end may still grow, so it stays; so does a head too short or
        with nothing to say (it goes out with what follows).
        """
        buf = self._buf
        line_end = buf.find("\n")
        space = buf.rfind(" ", 0, line_end if line_end >= 0 else len(buf))
        if space < self._config.clause_min_chars or not _speakable(buf[:space]):
            return
        self._take(space, chunks)

    def _next_end(self, final: bool) -> int:
        """End of the chunk at the head of the buffer, or _WAIT for more text."""
        end = self._sentence_end(final)
        if self._config.mode is ChunkMode.SENTENCE:
            return end
        clause = self._clause_end()
        if clause == _WAIT or (end != _WAIT and end <= clause):
            return end
        # A sentence decision still pending before the clause mark would come first.
        return clause if end != _WAIT or self._pos >= clause else _WAIT

    def _clause_end(self) -> int:
        """End of the first clause mark (a space must follow) past the minimum, or _WAIT."""
        buf = self._buf
        start = max(0, self._config.clause_min_chars - 3)
        line_end = buf.find("\n")
        for m in _CLAUSE.finditer(buf, start, line_end if line_end >= 0 else len(buf)):
            if m.end() >= self._config.clause_min_chars and _speakable(buf[: m.start()]):
                return m.end()
        return _WAIT

    def _sentence_end(self, final: bool) -> int:
        """End of the sentence (or cut) at the head of the buffer, or _WAIT."""
        buf = self._buf
        cfg = self._config
        limit = cfg.first_chunk_max_chars if self._first else cfg.max_chunk_chars
        while True:
            m = _CANDIDATE.search(buf, self._pos)
            if m is None:
                self._pos = len(buf)
                if len(buf) > limit:
                    return self._cut(buf, limit, final)
                return len(buf) if final else _WAIT
            i = m.start()
            if buf[i] == "\n":
                return self._cut(buf, limit, final) if i > limit else i
            if i >= limit:
                return self._cut(buf, limit, final)
            j = _match_end(_TERMINATOR_RUN, buf, i)
            k = _match_end(_CLOSER_RUN, buf, j)
            if k > limit:
                return self._cut(buf, limit, final)
            if k == len(buf):
                if final:
                    return k
                self._pos = i
                return _WAIT
            verdict = self._is_boundary(buf, i, j, k, final)
            if verdict == _WAIT:
                self._pos = i
                return _WAIT
            if verdict:
                return k
            self._pos = k

    def _cut(self, buf: str, limit: int, final: bool) -> int:
        """Where to cut a chunk that would run past ``limit``: clause, else word."""
        cfg = self._config
        floor = cfg.first_chunk_min_chars if self._first else limit // 2
        best = 0
        for m in _CLAUSE.finditer(buf, max(0, floor - 3), limit + 1):
            if floor <= m.end() <= limit:
                best = m.end()
        if best:
            return best
        space = buf.rfind(" ", 0, limit + 1)
        if space > 0:
            return space
        if _is_cjk(buf[limit - 1]) and _is_cjk(buf[limit]):
            return limit
        hard = cfg.max_chunk_chars  # one token longer than the limit
        if limit < hard:
            if (brk := _BREAK.search(buf, limit + 1, hard + 1)) is not None:
                return brk.start()
            if len(buf) <= hard:
                return len(buf) if final else _WAIT
        return hard

    def _is_boundary(self, buf: str, i: int, j: int, k: int, final: bool) -> int:
        """1 if the end mark run buf[i:j] plus closers up to k ends a sentence, else 0.

        _WAIT when the text after it is not there yet.
        """
        c = buf[k]
        if c == "\n":
            return 1
        run = buf[i:j]
        if not _CJK_TERMINATORS.isdisjoint(run):
            return self._cjk_boundary(buf, j, k, final)
        question = not _QUESTION.isdisjoint(run)
        if not c.isspace():
            # "3.14", "e.g.,", "?," go on; "name?What" (text glued after a tool call) ends.
            glued = c in "¿¡" or (c.isalpha() and not c.islower())
            token = buf[_token_start(buf, i) : i].lstrip(_OPENERS)
            return int(question and glued and token.isalpha())
        m = _NON_SPACE.search(buf, k)
        if m is None:
            return 1 if final else _WAIT
        d = m.start()
        if buf[d] == "\n":
            return 1
        start = _start_class(buf, d, final)
        if start == _WAIT:
            return _WAIT
        if question:
            return int(start != _LOWER)  # '"Why?" she asked.' goes on
        if j - i > 1 or run == "…":  # a whole ellipsis: ends only before a capital
            return int(start in (_UPPER, _INVERTED, _LETTER))
        if start == _LOWER:
            return 0
        return self._after_dot(buf, i, d, start, final)

    def _cjk_boundary(self, buf: str, j: int, k: int, final: bool) -> int:
        c = buf[k]
        if c in "、，,":
            return 0
        if buf[j - 1] == "．" and c.isdigit():
            return 0  # full-width decimal point
        if k > j and buf[k - 1] in "」』":  # 「はい。」と言った: a quotative particle goes on
            if c == "と":
                return 0
            if c == "っ":
                if k + 1 == len(buf):
                    return 1 if final else _WAIT
                return int(buf[k + 1] != "て")
        return 1

    def _after_dot(self, buf: str, i: int, d: int, start: int, final: bool) -> int:
        """A single dot followed by a space and a non-lowercase start at ``d``."""
        ts = _token_start(buf, i)
        token = buf[ts:i].lstrip(_OPENERS)
        if not token:
            return 1
        if token.isdecimal():
            return self._after_number(buf, ts, token, d, final)
        rules = self._rules
        key = token.lower()
        kind: Abbrev | None = None
        before = _dotted_token_before(buf, ts)
        if before is not None:
            kind = rules.pairs.get((before, key))  # second half of "p. ej.", "EE. UU."
        if kind is None and key in rules.first_parts:
            word = _next_word(buf, d, final)
            if word is None:
                return _WAIT
            if (key, word.lower()) in rules.pairs:
                return 0
        if kind is None:
            kind = rules.abbreviations.get(key)
        if kind is None:
            if len(token) == 1 and token.isupper():
                if ts == 0:
                    return 0  # "A. First option"
                kind = Abbrev.END  # an initial, or "vitamin C."
            elif "." in token and _DOTTED.fullmatch(token):
                kind = Abbrev.END  # an unknown dotted acronym: "U.K."
            else:
                return 1
        if kind is Abbrev.PREFIX:
            return 0
        if kind is Abbrev.NUMERIC:
            return int(start != _DIGIT)
        if start in (_INVERTED, _LETTER):
            return 1
        if start != _UPPER:
            return 0
        word = _next_word(buf, d, final)
        if word is None:
            return _WAIT
        return int(word.lower() in rules.starters)

    def _after_number(self, buf: str, ts: int, token: str, d: int, final: bool) -> int:
        """A number's dot: "12345. Let me" ends; "1. Eggs", "am 5. Mai" go on."""
        if ts == 0:
            return 0  # a list number opening the chunk
        if len(token) <= 2 and ts >= 2 and buf[ts - 2] == ":":
            return 0
        rules = self._rules
        if rules.months and len(token) <= 3:
            before = buf[_token_start(buf, ts - 1) : ts - 1].lower()
            if before in rules.ordinal_cues:
                return 0
            word = _next_word(buf, d, final)
            if word is None:
                return _WAIT
            if word.lower() in rules.months:
                return 0
        return 1
