"""Markdown to speakable text: what is dropped, what is held back while streaming."""

from __future__ import annotations

import pytest

from gateway.core.speech import SpeechFilter, to_speech


def streamed(text: str, step: int) -> str:
    speech = SpeechFilter()
    out = [speech.feed(text[i : i + step]) for i in range(0, len(text), step)]
    return "".join(out) + speech.finish()


CASES = [
    # inline markers
    ("**bold** and *italic* and ***both***", "bold and italic and both"),
    ("__bold__ and _italic_ text", "bold and italic text"),
    ("snake_case_name stays", "snake_case_name stays"),
    ("2 * 3 = 6 and 5*3", "2 * 3 = 6 and 5*3"),
    ("Use `pip install x` now", "Use pip install x now"),
    ("Run ``a `b` c`` here", "Run a b c here"),
    ("`**kwargs` stay literal", "**kwargs stay literal"),
    ("~~old~~ new, about ~5 km", "old new, about ~5 km"),
    (r"Literal \*star\* here", "Literal *star* here"),
    ("Hard\\\nbreak and C:\\dir", "Hard\nbreak and C:\\dir"),
    # links, images, autolinks, tags
    ("Read [the docs](https://x.y/a_b) today", "Read the docs today"),
    ("See [wiki](https://w.org/A_(b)) page", "See wiki page"),
    ("[**Bold link**](u) ok", "Bold link ok"),
    ("![a cat](cat.png) here", "a cat here"),
    ("Cite [1] and [2]", "Cite [1] and [2]"),
    ("Wow! [x] and !", "Wow! [x] and !"),
    ("Go to <https://x.y/z> now", "Go to https://x.y/z now"),
    ("Line<br>break and <b>bold</b>", "Line break and bold"),
    ("x < 5 and y > 3", "x < 5 and y > 3"),
    ("a <notatag> b", "a <notatag> b"),
    # block markers
    ("# Title\n## Sub title", "Title\nSub title"),
    ("#hashtag stays", "#hashtag stays"),
    ("- one\n* two\n+ three\n• four", "one\ntwo\nthree\nfour"),
    ("- [ ] todo\n- [x] done", "todo\ndone"),
    ("1. first\n2) second", "1. first\n2) second"),
    ("> quoted\n> > nested - item", "quoted\nnested - item"),
    ("  indented line", "indented line"),
    ("-5 degrees\n+1 vote", "-5 degrees\n+1 vote"),
    ("*emphasis* first", "emphasis first"),
    ("above\n---\n***\n___\nbelow", "above\nbelow"),
    ("a\n```py\ncode. Here\n  more\n```\nb", "a\nb"),
    ("a\n~~~\ncode\n~~~\nb", "a\nb"),
    ("unclosed\n```\ncode", "unclosed\n"),
    ("| A | B |\n|:--|--:|\n| 1 | 2. |", "A, B\n1, 2."),
    ("A | B\n---|---\n1 | 2", "A, B\n1, 2"),
    # whitespace
    ("many   spaces\tand\r\nCRLF", "many spaces and\nCRLF"),
    ("blank\n\n\n\nlines", "blank\nlines"),
    ("trailing space   \nnext", "trailing space\nnext"),
    ("", ""),
]


@pytest.mark.parametrize(("markdown", "speech"), CASES)
def test_to_speech(markdown: str, speech: str) -> None:
    assert to_speech(markdown) == speech


@pytest.mark.parametrize(("markdown", "speech"), CASES)
@pytest.mark.parametrize("step", [1, 2, 5])
def test_streamed_output_does_not_depend_on_cuts(markdown: str, speech: str, step: int) -> None:
    assert streamed(markdown, step) == speech


def test_unclosed_emphasis_run_is_held_back() -> None:
    speech = SpeechFilter()
    assert speech.feed("It is *") == "It is"
    assert speech.feed("*") == ""  # still the same run
    assert speech.feed("very") == " very"
    assert speech.feed("**") == ""
    assert speech.feed(" good") == " good"
    assert speech.finish() == ""


def test_link_is_held_back_until_decided() -> None:
    speech = SpeechFilter()
    assert speech.feed("See [do") == "See"
    assert speech.feed("cs](https://x.") == ""
    assert speech.feed("y) now") == " docs now"
    assert speech.finish() == ""


def test_unclosed_bracket_is_released_at_line_end() -> None:
    speech = SpeechFilter()
    assert speech.feed("Odd [bracket") == "Odd"
    assert speech.feed(" here\nnext") == " [bracket here\nnext"
    assert speech.finish() == ""


def test_unclosed_bracket_is_released_after_a_bounded_window() -> None:
    speech = SpeechFilter()
    out = speech.feed("[" + "x" * 300)
    assert out.startswith("[xxx")  # not held for ever
    assert speech.finish() == ""


def test_line_head_is_held_until_decided() -> None:
    speech = SpeechFilter()
    assert speech.feed("-") == ""  # bullet, rule or "-5"?
    assert speech.feed("-") == ""
    assert speech.feed("-") == ""
    assert speech.feed("\n- it") == "it"
    assert speech.finish() == ""


def test_finish_resets_state() -> None:
    speech = SpeechFilter()
    speech.feed("```\ncode")
    assert speech.finish() == ""
    assert speech.feed("*hi* there") == "hi there"
    assert speech.finish() == ""


def test_finish_releases_held_text() -> None:
    speech = SpeechFilter()
    assert speech.feed("Say [this") == "Say"
    assert speech.finish() == " [this"
