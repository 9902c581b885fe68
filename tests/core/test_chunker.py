"""Sentence chunker: where replies are cut, when chunks are released, length rules."""

from __future__ import annotations

import pytest

from gateway.core.chunker import Chunker, ChunkerConfig
from gateway.core.languages import GENERIC_RULES, rules_for


def chunk(text: str, language: str = "en", step: int | None = None, **config: int) -> list[str]:
    """Chunks of ``text`` streamed in ``step``-char deltas (one delta if None)."""
    chunker = Chunker(ChunkerConfig(language=language, **config))
    out: list[str] = []
    step = step or max(1, len(text))
    for i in range(0, len(text), step):
        out += chunker.push(text[i : i + step])
    return out + chunker.flush()


def check(text: str, expected: list[str], language: str = "en") -> None:
    """Same chunks whether the text arrives whole, char by char or in 3-char deltas."""
    assert chunk(text, language) == expected
    assert chunk(text, language, step=1) == expected
    assert chunk(text, language, step=3) == expected


ENGLISH = [
    # terminator runs and closers are one unit and stay with their sentence
    ("Hold on... let me look.", ["Hold on... let me look."]),
    ("Wait... What happened?", ["Wait...", "What happened?"]),
    ("Hmm… Right.", ["Hmm…", "Right."]),
    ("Hmm…yes, sure.", ["Hmm…yes, sure."]),
    ("Seriously?! That is wild.", ["Seriously?!", "That is wild."]),
    ("No way!!! Really.", ["No way!!!", "Really."]),
    ('She said "fine." Then she left.', ['She said "fine."', "Then she left."]),
    ("(Optional step.) Skip it.", ["(Optional step.)", "Skip it."]),
    ("He said 'no.' We agreed.", ["He said 'no.'", "We agreed."]),
    ("He said ‘no.’ We agreed.", ["He said ‘no.’", "We agreed."]),
    ("[Done.] Next one.", ["[Done.]", "Next one."]),
    ('Really?!" He left.', ['Really?!"', "He left."]),
    ("**Warning.** Next step.", ["Warning.", "Next step."]),
    ('"Why?" she asked.', ['"Why?" she asked.']),
    ('"Why?", she asked.', ['"Why?", she asked.']),
    ("Ready? 3, 2, 1.", ["Ready?", "3, 2, 1."]),
    # abbreviations
    ("Dr. Smith met Mr. Jones. They talked.", ["Dr. Smith met Mr. Jones.", "They talked."]),
    ("Mrs. Brown and St. John came.", ["Mrs. Brown and St. John came."]),
    ("Buy eggs, e.g. six. Done.", ["Buy eggs, e.g. six.", "Done."]),
    ("Use a tool, i.e. Python. Then test.", ["Use a tool, i.e. Python.", "Then test."]),
    ("Cats vs. Dogs is old. It still sells.", ["Cats vs. Dogs is old.", "It still sells."]),
    ("It weighs approx. 3 kg. Lift it.", ["It weighs approx. 3 kg.", "Lift it."]),
    ("See Fig. 3 and No. 5 there. Now.", ["See Fig. 3 and No. 5 there.", "Now."]),
    ("The answer is no. Then what?", ["The answer is no.", "Then what?"]),
    ("Apples, pears, etc. The rest is fine.", ["Apples, pears, etc.", "The rest is fine."]),
    ("Apples, pears, etc. Bananas too.", ["Apples, pears, etc. Bananas too."]),
    ("The U.S. Army came. It left.", ["The U.S. Army came.", "It left."]),
    ("I live in the U.S. The weather is fine.", ["I live in the U.S.", "The weather is fine."]),
    ("We met at 5 p.m. Then we ate.", ["We met at 5 p.m.", "Then we ate."]),
    ("At 9 a.m. Eastern it opens.", ["At 9 a.m. Eastern it opens."]),
    ("Call at 9 a.m. or later.", ["Call at 9 a.m. or later."]),
    ("J. K. Rowling wrote it. Read it.", ["J. K. Rowling wrote it.", "Read it."]),
    ("The U.K. The end.", ["The U.K.", "The end."]),
    ("Roe v. Wade was decided. Yes.", ["Roe v. Wade was decided.", "Yes."]),
    # numbers, code-ish tokens: a dot followed by a non-space is never a boundary
    ("Pi is 3.14 and 1,000.50 or 1.000,50 today.", ["Pi is 3.14 and 1,000.50 or 1.000,50 today."]),
    ("Meet at 10:30. Bring it.", ["Meet at 10:30.", "Bring it."]),
    ("Use v1.2.3 on Python 3.11. It works.", ["Use v1.2.3 on Python 3.11.", "It works."]),
    ("Ping 192.168.0.1 now. Done.", ["Ping 192.168.0.1 now.", "Done."]),
    ("Go to https://x.y/a.b?c=1. Then log in.", ["Go to https://x.y/a.b?c=1.", "Then log in."]),
    ("Mail a.b@c.com. Thanks.", ["Mail a.b@c.com.", "Thanks."]),
    ("Open main.py. Edit config.yaml now.", ["Open main.py.", "Edit config.yaml now."]),
    ("We use .NET here. Fine.", ["We use .NET here.", "Fine."]),
    ("I have 12345. Let me check.", ["I have 12345.", "Let me check."]),
    ("I have 12345.Let me check.", ["I have 12345.Let me check."]),
    ("It costs $3.50. Cheap.", ["It costs $3.50.", "Cheap."]),
    ("Steps: 1. Open it.", ["Steps: 1. Open it."]),
    ("1. Eggs are first.", ["1. Eggs are first."]),
    ("A. First option.", ["A. First option."]),
    # ?/! glued to a capital: text resuming after a tool call
    ("What is your name?What a day.", ["What is your name?", "What a day."]),
    ("Great!Now go.", ["Great!", "Now go."]),
    ("See x.com/a?B=1 now.", ["See x.com/a?B=1 now."]),
    ("Hi.There is no split.", ["Hi.There is no split."]),
    # lines and markdown blocks are boundaries
    ("1. Eggs\n2. Milk", ["1. Eggs", "2. Milk"]),
    ("- bread\n* butter\n+ jam", ["bread", "butter", "jam"]),
    ("# Title\nSome text", ["Title", "Some text"]),
    ("First part\n\nSecond part", ["First part", "Second part"]),
    ("Line one\nline two", ["Line one", "line two"]),
    ("Intro:\n```python\nprint('x. Y')\n```\nAfter.", ["Intro:", "After."]),
    ("| A | B |\n|---|---|\n| 1 | 2 |", ["A, B", "1, 2"]),
    ("Some text.\n---\nMore.", ["Some text.", "More."]),
    # punctuation-only pieces are not chunks
    ("Done. ... Next.", ["Done.", "Next."]),
    ("?", []),
    ("", []),
    ("   \n\n  ", []),
]


@pytest.mark.parametrize(("text", "expected"), ENGLISH)
def test_english(text: str, expected: list[str]) -> None:
    check(text, expected)


OTHER_LANGUAGES = [
    ("es", "¿Ud. vino? Sí.", ["¿Ud. vino?", "Sí."]),
    ("es", "La Sra. Ortiz vino. El Sr. Pérez no.", ["La Sra. Ortiz vino.", "El Sr. Pérez no."]),
    ("es", "Lee la pág. 5, núm. 3. Luego sigue.", ["Lee la pág. 5, núm. 3.", "Luego sigue."]),
    ("es", "Está aprox. a 3 km. Vamos.", ["Está aprox. a 3 km.", "Vamos."]),
    ("es", "Vivo en EE. UU. desde 2010. Bien.", ["Vivo en EE. UU. desde 2010.", "Bien."]),
    ("es", "Trabajo en EE. UU. Luego vuelvo.", ["Trabajo en EE. UU.", "Luego vuelvo."]),
    ("es", "Frutas, p. ej. Manzanas. Bien.", ["Frutas, p. ej. Manzanas.", "Bien."]),
    ("es", "Son las 10 a. m. Luego comemos.", ["Son las 10 a. m.", "Luego comemos."]),
    ("es", "Son las 10 a. m. y comemos.", ["Son las 10 a. m. y comemos."]),
    ("es", "A las 5 p. m. Vamos.", ["A las 5 p. m.", "Vamos."]),
    ("es", "Llega a las 10.30 h. Luego sale.", ["Llega a las 10.30 h.", "Luego sale."]),
    ("es", "Es el 1.º de mayo y el 3.er día. Bien.", ["Es el 1.º de mayo y el 3.er día.", "Bien."]),
    ("es", "Cuesta 1.000,50 €. Caro.", ["Cuesta 1.000,50 €.", "Caro."]),
    ("es", "¿Qué?, dijo. ¡Hola! ¿Cómo estás?", ["¿Qué?, dijo.", "¡Hola!", "¿Cómo estás?"]),
    ("es", "¡Hola!¿Qué tal?", ["¡Hola!", "¿Qué tal?"]),
    ("es", "Vale. ¿Y tú?", ["Vale.", "¿Y tú?"]),
    ("es", "Dijo: «Vale.» Luego se fue.", ["Dijo: «Vale.»", "Luego se fue."]),
    ("es", "Frutas, etc. Después seguimos.", ["Frutas, etc.", "Después seguimos."]),
    ("es-ES", "Hola, Dr. Ruiz. ¿Vamos?", ["Hola, Dr. Ruiz.", "¿Vamos?"]),
    ("de", "Am 5. Mai ist frei. Gut.", ["Am 5. Mai ist frei.", "Gut."]),
    ("de", "Der 2. Weltkrieg war lang. Ja.", ["Der 2. Weltkrieg war lang.", "Ja."]),
    ("de", "Bis 3. Oktober. Dann frei.", ["Bis 3. Oktober.", "Dann frei."]),
    ("de", "Montag, 5. Mai passt. Gut.", ["Montag, 5. Mai passt.", "Gut."]),
    ("de", "Ich zahlte 2020. Dann ging ich.", ["Ich zahlte 2020.", "Dann ging ich."]),
    ("de", "Obst, z. B. Äpfel. Gut.", ["Obst, z. B. Äpfel.", "Gut."]),
    ("de", "Obst, z.B. Äpfel, d. h. Essen. Ja.", ["Obst, z.B. Äpfel, d. h. Essen.", "Ja."]),
    ("de", "Siehe Nr. 5 und S. 10. Fertig.", ["Siehe Nr. 5 und S. 10.", "Fertig."]),
    ("de", "Äpfel, Birnen usw. Dann Brot.", ["Äpfel, Birnen usw.", "Dann Brot."]),
    ("de", "Frag Dr. Weber bzw. Prof. Maier. Gut.", ["Frag Dr. Weber bzw. Prof. Maier.", "Gut."]),
    ("fr", "M. Dupont est là. Il attend.", ["M. Dupont est là.", "Il attend."]),
    ("fr", "Des fruits, p. ex. Pommes. Bien.", ["Des fruits, p. ex. Pommes.", "Bien."]),
    ("fr", "Voir p. 5 et chap. 2. Ensuite on part.", ["Voir p. 5 et chap. 2.", "Ensuite on part."]),
    ("fr", "Des pommes, etc. Puis du pain.", ["Des pommes, etc.", "Puis du pain."]),
    (
        "it",
        "Il Sig. Rossi e il Dott. Bianchi. Poi basta.",
        ["Il Sig. Rossi e il Dott. Bianchi.", "Poi basta."],
    ),
    ("it", "Mele, pere ecc. Poi pane.", ["Mele, pere ecc.", "Poi pane."]),
    (
        "pt-BR",
        "O Sr. Silva e a Dra. Costa vieram. Depois saíram.",
        ["O Sr. Silva e a Dra. Costa vieram.", "Depois saíram."],
    ),
    ("pt", "Veja a pág. 5. Então siga.", ["Veja a pág. 5.", "Então siga."]),
    ("nl", "Fruit, bijv. Appels. Goed.", ["Fruit, bijv. Appels.", "Goed."]),
    ("pl", "Owoce, np. Jabłka. Dobrze.", ["Owoce, np. Jabłka.", "Dobrze."]),
    ("zh", "你说：“好。”我们走吧。", ["你说：“好。”", "我们走吧。"]),
    ("zh", "你好吗？我很好！谢谢。", ["你好吗？", "我很好！", "谢谢。"]),
    ("zh", "真的？！太好了。", ["真的？！", "太好了。"]),
    ("zh", "好的。 我们走。", ["好的。", "我们走。"]),
    ("zh", "（注意。）然后走。", ["（注意。）", "然后走。"]),
    ("zh", "他说……也许吧。", ["他说……也许吧。"]),
    ("ja", "「はい。」と言った。次へ。", ["「はい。」と言った。", "次へ。"]),
    ("ja", "「本当？」って聞いた。", ["「本当？」って聞いた。"]),
    ("ja", "『終わり。』次の章。", ["『終わり。』", "次の章。"]),
    ("hi", "मैं ठीक हूँ। आप कैसे हैं?", ["मैं ठीक हूँ।", "आप कैसे हैं?"]),
    ("xx", "Dr. Who is here. Ok.", ["Dr. Who is here.", "Ok."]),
]


@pytest.mark.parametrize(("language", "text", "expected"), OTHER_LANGUAGES)
def test_other_languages(language: str, text: str, expected: list[str]) -> None:
    check(text, expected, language)


def test_language_steers_the_tables() -> None:
    text = "La Sra. Ortiz vino."
    assert chunk(text, "es") == ["La Sra. Ortiz vino."]
    assert chunk(text, "en") == ["La Sra.", "Ortiz vino."]  # no Spanish table in English


def test_language_tags_resolve() -> None:
    assert rules_for("es-ES") is rules_for("es") is rules_for("ES_mx")
    assert rules_for("pt-BR") is rules_for("pt")
    assert rules_for("xx-YY") is GENERIC_RULES
    assert rules_for("zh") is GENERIC_RULES
    assert "sra" in rules_for("es").abbreviations
    assert "e.g" in rules_for("es").abbreviations  # English fallback
    assert "sra" not in rules_for("en").abbreviations


# --- when chunks are released ---------------------------------------------------------


def test_sentence_waits_for_next_non_space_char_only() -> None:
    chunker = Chunker()
    assert chunker.push("It works.") == []  # never on the end mark itself
    assert chunker.push(" ") == []
    assert chunker.push("N") == ["It works."]
    assert chunker.push("ext one") == []
    assert chunker.flush() == ["Next one"]


def test_question_released_on_next_char() -> None:
    chunker = Chunker()
    assert chunker.push("Ready?") == []
    assert chunker.push(" Y") == ["Ready?"]
    assert chunker.flush() == ["Y"]


def test_abbreviation_waits_for_the_whole_next_word() -> None:
    chunker = Chunker()
    assert chunker.push("We met at 5 p.m. Th") == []
    assert chunker.push("en") == []  # "Then" might still be "Thenceforth"
    assert chunker.push(" we ate.") == ["We met at 5 p.m."]
    assert chunker.flush() == ["Then we ate."]


def test_ellipsis_is_consumed_whole_across_deltas() -> None:
    chunker = Chunker()
    assert chunker.push("Hold on.") == []
    assert chunker.push(".") == []
    assert chunker.push(". let") == []  # lower case after an ellipsis: same sentence
    assert chunker.push(" me look. Wait.") == ["Hold on... let me look."]
    assert chunker.push("..") == []
    assert chunker.push(" W") == ["Wait..."]  # the whole run, never ".." + "."
    assert chunker.flush() == ["W"]


def test_closer_after_end_mark_is_waited_for() -> None:
    chunker = Chunker()
    assert chunker.push('She said "fine.') == []
    assert chunker.push('"') == []
    assert chunker.push(" Then") == ['She said "fine."']
    assert chunker.flush() == ["Then"]


def test_cjk_needs_no_space_but_waits_for_closers() -> None:
    chunker = Chunker(ChunkerConfig(language="zh"))
    assert chunker.push("你说：“好。") == []
    assert chunker.push("”") == []
    assert chunker.push("我") == ["你说：“好。”"]
    assert chunker.flush() == ["我"]


def test_newline_releases_a_line_at_once() -> None:
    chunker = Chunker()
    assert chunker.push("- first item\n") == ["first item"]
    assert chunker.push("- second") == []
    assert chunker.flush() == ["second"]


def test_flush_releases_the_rest_and_resets() -> None:
    chunker = Chunker(ChunkerConfig(first_chunk_min_chars=5, first_chunk_max_chars=20))
    assert chunker.push("Hello there. How are") == ["Hello there."]
    assert chunker.flush() == ["How are"]
    assert chunker.flush() == []
    # a new reply: the first-chunk rule applies again
    assert chunker.push("one two three four five six seven") == ["one two three four"]


def test_push_empty_delta() -> None:
    chunker = Chunker()
    assert chunker.push("") == []
    assert chunker.flush() == []


def test_whitespace_between_deltas_is_kept() -> None:
    deltas = ["I have 12345.", " ", "Let", " me", " check", "."]
    chunker = Chunker()
    out = [c for d in deltas for c in chunker.push(d)] + chunker.flush()
    assert out == ["I have 12345.", "Let me check."]
    assert chunk("I have 12345.\nLet me check.") == ["I have 12345.", "Let me check."]


def test_whitespace_inside_a_chunk_collapses() -> None:
    assert chunk("Lots   of\tspace  here .  Fine.") == ["Lots of space here .", "Fine."]


# --- length rules ---------------------------------------------------------------------

LONG_FIRST = (
    "This first sentence keeps going for quite some time, with a comma after the start, "
    "and then it carries on well past the limit before it ends."
)


def test_early_first_chunk_at_last_clause_boundary() -> None:
    out = chunk(LONG_FIRST)
    assert (
        out[0]
        == "This first sentence keeps going for quite some time, with a comma after the start,"
    )
    assert out[1] == "and then it carries on well past the limit before it ends."


@pytest.mark.parametrize("mark", [",", ";", ":", " —", "..."])
def test_early_first_chunk_clause_marks(mark: str) -> None:
    head = "The first part of this long sentence runs on for a while" + mark
    text = head + " and the rest keeps going for a good many more words until it stops."
    assert chunk(text, first_chunk_min_chars=40, first_chunk_max_chars=80)[0] == head


def test_early_first_chunk_clause_must_be_past_min_chars() -> None:
    text = "Well, " + "word " * 30 + "end."
    out = chunk(text, first_chunk_min_chars=40, first_chunk_max_chars=60)
    assert out[0] != "Well,"
    assert len(out[0]) <= 60
    assert out[0].startswith("Well, word")
    assert " ".join(out).split() == text.split()


def test_early_first_chunk_falls_back_to_word_boundary() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    out = chunk(text, first_chunk_min_chars=10, first_chunk_max_chars=30)
    assert out[0] == "alpha beta gamma delta epsilon"
    assert " ".join(out) == text


def test_early_cut_only_for_the_first_chunk() -> None:
    second = "This second sentence is also long, has a comma early on, and runs past the limit."
    out = chunk("Hi. " + second, first_chunk_min_chars=10, first_chunk_max_chars=30)
    assert out == ["Hi.", second]


def test_short_first_sentence_is_not_cut() -> None:
    text = "Sure, that works, I think. And more."
    assert chunk(text, first_chunk_min_chars=5, first_chunk_max_chars=30) == [
        "Sure, that works, I think.",
        "And more.",
    ]


def test_max_chunk_cut_at_clause_boundary() -> None:
    text = "Hi. Then " + "word " * 20 + "and then, " + "more " * 20 + "end."
    out = chunk(text, max_chunk_chars=150)
    assert out[0] == "Hi."
    assert out[1].endswith("and then,")
    assert all(len(c) <= 150 for c in out)
    assert " ".join(out).split() == text.split()


def test_max_chunk_cut_at_word_boundary_never_mid_word() -> None:
    words = [f"w{i}" for i in range(200)]
    text = "Hi. " + " ".join(words)
    out = chunk(text, first_chunk_max_chars=50, max_chunk_chars=50)
    assert all(len(c) <= 50 for c in out)
    assert " ".join(out).split() == text.split()


def test_long_unpunctuated_text_is_released_progressively() -> None:
    chunker = Chunker()
    released = 0
    for _ in range(2000):
        released += len(chunker.push("lorem ipsum "))
    assert released > 70  # ~24 KB of text did not wait for flush()
    assert all(len(c) <= 300 for c in chunker.flush())


def test_one_token_longer_than_the_limit_is_cut_hard() -> None:
    url = "https://example.com/" + "a" * 400
    out = chunk(f"See {url} now.")
    assert out == ["See", url[:300], url[300:] + " now."]


def test_first_chunk_long_token_waits_for_its_end() -> None:
    token = "x" * 130
    assert chunk(f"{token} and more text.") == [token, "and more text."]


def test_cjk_long_first_sentence_is_cut_without_spaces() -> None:
    text = "我" * 150 + "。"
    out = chunk(text, "zh")
    assert out == ["我" * 120, "我" * 30 + "。"]


def test_cjk_clause_boundary() -> None:
    text = "我" * 50 + "，" + "你" * 100 + "。"
    out = chunk(text, "zh")
    assert out == ["我" * 50 + "，", "你" * 100 + "。"]


@pytest.mark.parametrize(
    "config",
    [
        {"first_chunk_min_chars": 0},
        {"first_chunk_min_chars": 50, "first_chunk_max_chars": 40},
        {"first_chunk_max_chars": 400},
    ],
)
def test_config_is_validated(config: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="need"):
        ChunkerConfig(**config)  # type: ignore[arg-type]
