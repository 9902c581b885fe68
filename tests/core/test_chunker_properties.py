"""Properties of the chunker over random delta cuts and generated text (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.chunker import Chunker, ChunkerConfig, ChunkMode
from gateway.core.speech import SpeechFilter, to_speech

CORPUS = [
    "Hold on... let me look. Wait... What? Seriously?! That is wild!!! Fine.",
    'She said "fine." Then she left. (Optional step.) Skip it… Okay?',
    "**Warning.** Next. What is your name?What a day. Great!Now go.",
    "Dr. Smith met Mr. Jones at 5 p.m. Then they left, e.g. at six. The U.S. Army. etc. The end.",
    "Pi is 3.14, 1,000.50 or 1.000,50 at 10:30. Use v1.2.3 on Python 3.11. I have 12345. Let me.",
    "Go to https://x.y/a.b?c=1&d=2. Mail a.b@c.com. Open main.py. Ping 192.168.0.1 now.",
    "## Plan\n\n1. Eggs\n2. Milk\n- bread\n* butter\n> quote **bold**\n\n---\nDone.",
    "Read [the docs](https://x.y/a_(b)) and `code_here` ok. ![img](u.png) ~~old~~ <br> x < 5.",
    "Intro:\n```python\nprint('x. Y')\n```\n| A | B |\n|---|---|\n| 1 | 2 |\nAfter.",
    "¿Ud. vino? La Sra. Ortiz vino. Está en la pág. 5, aprox. 3 km. Vivo en EE. UU. desde 2010.",
    "Son las 10 a. m. Luego comemos, p. ej., pan. ¿Qué?, dijo. ¡Hola!¿Qué tal? Es el 1.º.",
    "Am 5. Mai ist frei. Der 2. Weltkrieg. Obst, z. B. Äpfel. Ich zahlte 2020. Dann ging ich.",
    "M. Dupont est là. Des fruits, p. ex. Pommes. Il Sig. Rossi. O Sr. Silva e a Dra. Costa.",
    "你说：“好。”我们走吧。你好吗？我很好！真的？！他说……也许吧。",
    "「はい。」と言った。「本当？」って聞いた。『終わり。』次の章。",
    "Cafe\u0301 de\u0301ja\u0300 vu. Nai\u0308ve? Yes. 👍 Done. 🎉 Vraiment\u00a0? Oui.\u00a0non.",
    "This first sentence keeps going for quite some time, with a comma after the start, and "
    "then it carries on well past the limit; it has clauses: several — before it ends.",
    "lorem ipsum dolor sit amet " * 30,
    "x" * 350 + " and then some text after a very long token.",
    "我" * 130 + "，" + "你" * 200 + "。",
]

TOKENS = [
    "Dr.", "e.g.", "etc.", "U.S.", "p.", "ej.", "EE.", "UU.", "a.", "m.", "z.", "B.", "Sra.",
    "3.14", "12345.", "1.", "5.", "Mai", "am", "word", "Word", "the", "The", "hello", "ok",
    "¿Qué?", "¡Sí!", ".", "?", "!", "?!", "...", "…", '"', "”", ")", "(", "'", "’s", ",", ";",
    ":", "—", "**", "*", "_", "`", "```", "~~", "[docs](https://x.y)", "[", "]", "<br>", "<",
    ">", "\\", "https://a.b/c", "a@b.com", "v1.2.3", "你好。", "」と", "「", "。", "？", "，",
    "\n", "\n\n", "- ", "# ", "1. ", "> ", "| a | b |", "|---|", "name?What",
]  # fmt: skip

SMALL = ChunkerConfig(first_chunk_min_chars=5, first_chunk_max_chars=20, max_chunk_chars=40)
CONFIGS = [ChunkerConfig(), ChunkerConfig(language="es"), ChunkerConfig(language="de"), SMALL]

generated_text = st.lists(
    st.tuples(st.sampled_from(TOKENS), st.sampled_from(["", " ", " ", "  ", "\n", "\u00a0"])),
    max_size=40,
).map(lambda parts: "".join(token + gap for token, gap in parts))


def stream(text: str, cuts: list[int], config: ChunkerConfig) -> list[str]:
    chunker = Chunker(config)
    out: list[str] = []
    previous = 0
    for cut in [*sorted(cuts), len(text)]:
        out += chunker.push(text[previous:cut])
        previous = cut
    return out + chunker.flush()


def cuts_for(data: st.DataObject, text: str) -> list[int]:
    """Random cut points, many of them next to punctuation or markup, where bugs hide."""
    anywhere = st.integers(0, len(text))
    edges = [i for i in range(1, len(text)) if not (text[i - 1].isalnum() and text[i].isalnum())]
    points = st.one_of(anywhere, st.sampled_from(edges)) if edges else anywhere
    return data.draw(st.lists(points, max_size=30), label="cuts")


@settings(deadline=None, max_examples=150)
@given(text=st.sampled_from(CORPUS), config=st.sampled_from(CONFIGS), data=st.data())
def test_corpus_chunks_do_not_depend_on_delta_cuts(
    text: str, config: ChunkerConfig, data: st.DataObject
) -> None:
    assert stream(text, cuts_for(data, text), config) == stream(text, [], config)


@settings(deadline=None, max_examples=150)
@given(text=generated_text, config=st.sampled_from(CONFIGS), data=st.data())
def test_generated_chunks_do_not_depend_on_delta_cuts(
    text: str, config: ChunkerConfig, data: st.DataObject
) -> None:
    assert stream(text, cuts_for(data, text), config) == stream(text, [], config)


@settings(deadline=None, max_examples=40)
@given(text=st.one_of(generated_text, st.sampled_from(CORPUS)), config=st.sampled_from(CONFIGS))
def test_char_by_char_equals_whole(text: str, config: ChunkerConfig) -> None:
    assert stream(text, list(range(len(text))), config) == stream(text, [], config)


@settings(deadline=None, max_examples=150)
@given(text=st.one_of(generated_text, st.sampled_from(CORPUS)), config=st.sampled_from(CONFIGS))
def test_chunks_are_clean_and_bounded(text: str, config: ChunkerConfig) -> None:
    chunks = stream(text, [], config)
    for chunk in chunks:
        assert chunk == chunk.strip() != ""
        assert "\n" not in chunk
        assert "  " not in chunk
        assert any(ch.isalnum() for ch in chunk)
        assert len(chunk) <= config.max_chunk_chars
    if chunks and " " in chunks[0][: config.first_chunk_max_chars + 1]:
        assert len(chunks[0]) <= config.first_chunk_max_chars


word = st.tuples(
    st.sampled_from(["", "", "", '"', "(", "¿"]),
    st.text(alphabet="abcdefghijXYZáñü0123456789", min_size=1, max_size=10),
    st.sampled_from(["", "", "", ".", ",", "?", "!", "...", "?!", '."', ".)", ":", ";", "…"]),
).map("".join)
plain_text = st.lists(
    st.tuples(word, st.sampled_from([" ", " ", " ", "  ", "\n", " \n\n "])), max_size=80
).map(lambda parts: "".join(w + gap for w, gap in parts))


@settings(deadline=None, max_examples=150)
@given(text=plain_text, config=st.sampled_from(CONFIGS), data=st.data())
def test_words_survive_intact(text: str, config: ChunkerConfig, data: st.DataObject) -> None:
    chunks = stream(text, cuts_for(data, text), config)
    assert " ".join(chunks).split() == text.split()


@settings(deadline=None, max_examples=100)
@given(text=st.one_of(generated_text, st.sampled_from(CORPUS)), data=st.data())
def test_speech_output_does_not_depend_on_delta_cuts(text: str, data: st.DataObject) -> None:
    speech = SpeechFilter()
    previous, out = 0, []
    for cut in [*sorted(cuts_for(data, text)), len(text)]:
        out.append(speech.feed(text[previous:cut]))
        previous = cut
    out.append(speech.finish())
    assert "".join(out) == to_speech(text)


@settings(deadline=None, max_examples=40)
@given(text=st.one_of(generated_text, st.sampled_from(CORPUS)))
def test_speech_char_by_char_equals_whole(text: str) -> None:
    speech = SpeechFilter()
    out = [speech.feed(ch) for ch in text]
    assert "".join(out) + speech.finish() == to_speech(text)


# --- clause and word modes ----------------------------------------------------------------

EAGER = [ChunkMode.CLAUSE, ChunkMode.WORD]
LATIN_TOKENS = [t for t in TOKENS if not any(ch >= "\u2e80" for ch in t)]
latin_text = st.lists(
    st.tuples(st.sampled_from(LATIN_TOKENS), st.sampled_from(["", " ", " ", "  ", "\n"])),
    max_size=40,
).map(lambda parts: "".join(token + gap for token, gap in parts))


def in_mode(config: ChunkerConfig, mode: ChunkMode) -> ChunkerConfig:
    return dataclasses.replace(config, mode=mode)


def alnum(chunks: list[str]) -> str:
    return "".join(ch for chunk in chunks for ch in chunk if ch.isalnum())


def words(chunks: list[str]) -> list[str]:
    return [w for w in " ".join(chunks).split() if any(ch.isalnum() for ch in w)]


def first_release(text: str, cuts: list[int], config: ChunkerConfig) -> int:
    """Index of the delta (len(cuts)+1 = the flush) that released the first chunk."""
    chunker = Chunker(config)
    previous = 0
    for i, cut in enumerate([*sorted(cuts), len(text)]):
        if chunker.push(text[previous:cut]):
            return i
        previous = cut
    return len(cuts) + 1


@settings(deadline=None, max_examples=200)
@given(
    text=st.one_of(st.sampled_from(CORPUS), generated_text),
    config=st.sampled_from(CONFIGS),
    mode=st.sampled_from(EAGER),
    data=st.data(),
)
def test_eager_modes_lose_and_repeat_nothing(
    text: str, config: ChunkerConfig, mode: ChunkMode, data: st.DataObject
) -> None:
    cuts = cuts_for(data, text)
    eager = stream(text, cuts, in_mode(config, mode))
    assert alnum(eager) == alnum(stream(text, [], config))
    for chunk in eager:
        assert chunk == chunk.strip()
        assert "\n" not in chunk
        assert any(ch.isalnum() for ch in chunk)
        assert len(chunk) <= config.max_chunk_chars


@settings(deadline=None, max_examples=200)
@given(text=latin_text, mode=st.sampled_from(EAGER), data=st.data())
def test_eager_modes_never_split_a_word(text: str, mode: ChunkMode, data: st.DataObject) -> None:
    config = ChunkerConfig()
    eager = stream(text, cuts_for(data, text), in_mode(config, mode))
    assert words(eager) == words(stream(text, [], config))


@settings(deadline=None, max_examples=200)
@given(
    text=st.one_of(st.sampled_from(CORPUS), generated_text),
    config=st.sampled_from(CONFIGS),
    mode=st.sampled_from(EAGER),
    data=st.data(),
)
def test_eager_modes_release_the_first_chunk_no_later(
    text: str, config: ChunkerConfig, mode: ChunkMode, data: st.DataObject
) -> None:
    cuts = cuts_for(data, text)
    assert first_release(text, cuts, in_mode(config, mode)) <= first_release(text, cuts, config)


@given(text=st.sampled_from(CORPUS), data=st.data())
@settings(deadline=None, max_examples=100)
def test_clause_mode_chunks_do_not_depend_on_delta_cuts(text: str, data: st.DataObject) -> None:
    """Clause mode still waits for what decides a cut, so its chunks ignore the cuts."""
    config = ChunkerConfig(mode=ChunkMode.CLAUSE)
    assert stream(text, cuts_for(data, text), config) == stream(text, [], config)
