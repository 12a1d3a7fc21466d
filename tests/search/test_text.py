"""Tokenizer: stop words, stems, Unicode, degenerate input."""

from __future__ import annotations

import threading

import pytest

from dakera_actors.search.text import CONTENT_WORDS, STOP_WORDS, stem, tokenize, words


def test_stop_words_dropped() -> None:
    assert tokenize("The user is in the garden and it is raining") == ["user", "garden", "rain"]
    assert tokenize("the of and to a in is it") == []


def test_contractions_are_stop_words_both_spellings() -> None:
    assert tokenize("I don't know, it's fine") == tokenize("I do not know, it is fine")
    assert tokenize("I don’t") == []  # typographic apostrophe normalised


def test_content_words_the_package_lists_are_kept() -> None:
    # the stop-words package lists "works", "home", "computer", "new", "year" as stop words
    assert tokenize("The user works from home at Microsoft") == ["user", "work", "home", "microsoft"]
    assert tokenize("User bought a new computer last year") == ["user", "bought", "new", "comput", "last", "year"]
    assert {"work", "home", "two"} <= CONTENT_WORDS
    assert not CONTENT_WORDS & STOP_WORDS
    assert "the" in STOP_WORDS and "10" not in STOP_WORDS


def test_stems_merge_inflections() -> None:
    assert stem("running") == stem("runs") == stem("run") == "run"
    assert tokenize("running") == tokenize("runs") == tokenize("Run")
    assert tokenize("prefers preferred preference") == ["prefer"] * 3
    assert tokenize("the user's cats") == tokenize("users cat")


def test_case_and_unicode() -> None:
    assert tokenize("Straße") == tokenize("STRASSE")  # casefold, not lower
    assert tokenize("ﬁne") == tokenize("fine")  # NFKC ligature
    assert tokenize("ＤＡＲＫ") == tokenize("dark")  # NFKC full width
    assert words("naïve café") == ["naïve", "café"]
    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining marks stay inside words
    assert words("Москва весной") == ["москва", "весной"]
    assert words("東京タワー") == ["東京タワー"]  # no spaces, one word per run


def test_separators() -> None:
    assert words("dark-mode") == ["dark", "mode"]
    assert words("snake_case") == ["snake", "case"]
    assert words("pi is 3.14") == ["pi", "3", "14"]
    assert words("o'brien's rock'n'roll users'") == ["o'brien's", "rock'n'roll", "users"]
    assert words("email: a.b@example.com!") == ["email", "example"]


@pytest.mark.parametrize("text", ["", " ", "\t\n  \r", "?!...", "--- ''' \"\" ()[]{}", "_ _ _", "'"])
def test_empty_whitespace_and_punctuation(text: str) -> None:
    assert tokenize(text) == []
    assert words(text) == []


def test_deterministic_and_thread_safe() -> None:
    text = "Running runners ran quickly through the connected connections"
    expected = tokenize(text)
    results: list[list[str]] = []

    def work() -> None:
        for _ in range(50):
            results.append(tokenize(text))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)
