"""Text analysis for BM25 and the hashing embedder: words, stop words, stems.

Pure and deterministic: no I/O beyond the stop-word list the ``stop-words`` package reads once at
import, no clock, no randomness.

Rules, in order:

1. Normalise: Unicode NFKC (full-width forms, ligatures such as "ﬁ"), then ``str.casefold``
   ("Straße" and "STRASSE" meet); typographic apostrophes (’ ʼ ＇) become "'".
2. Split into words: a word is a run of letters, digits and combining marks (so Devanagari,
   Arabic and the like stay whole), underscore excluded. An apostrophe *between* two such runs
   stays inside the word ("don't", "user's", "o'brien"); anywhere else it separates. Every other
   character separates, hyphens included: "dark-mode" gives "dark" and "mode", so it matches the
   spaced spelling; "3.14" gives "3" and "14". Scripts written without spaces (Chinese, Japanese,
   Thai) give one word per run: the embedder's character n-grams still see inside them.
3. Drop stop words: the English list of the ``stop-words`` package, minus the numbers and the
   content words (nouns, adjectives, lexical verbs, number words) that list also carries, see
   :data:`CONTENT_WORDS`. Checked on the surface word, before stemming, so contractions match.
4. Stem with the Snowball English stemmer (PyStemmer): "running", "runs" and "run" all give
   "run"; the stemmer also strips possessive "'s".
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
import zlib

import Stemmer
from stop_words import get_stop_words

__all__ = ["CONTENT_WORDS", "STOP_WORDS", "TOKENIZER_ID", "stem", "tokenize", "words"]

# The package's English list (1,333 entries in 2025.11) has grown past function words: used
# whole, "The user works from home at Microsoft" would index as just "user". These are the
# entries that name things a memory is about; they stay terms (BM25's IDF already discounts the
# common ones). Kept: closed-class words (pronouns, determiners, prepositions, conjunctions,
# auxiliaries, modals and their contractions), discourse adverbs, country and web codes.
CONTENT_WORDS: frozenset[str] = frozenset(
    # nouns
    """
    act area areas back backs bill bottom caption case cases cause causes changes computer copy
    course date detail effect end ends example face faces fact facts fire front goods group groups
    home homepage html http importance index information interest interests invention keys kind
    length line man member members men microsoft mill net netscape novel null number numbers order
    orders page pages part parts past place places point points problem problems research results
    ring room rooms section side sides site state states system terms test text thing things
    thought thoughts tip today top value way ways web webpage website wells width words work
    works world year years ai hr qa tv uk
    """.split()
    # adjectives
    + """
    appropriate available big clear close different doubtful early empty free full general good
    great greater greatest high higher highest immediate important inner interesting interested
    large last latest little long longer longest low lower new newer newest old older oldest open
    proud recent right sensible serious significant sincere small smaller smallest thick thin
    useful usefulness young younger youngest
    """.split()
    # lexical verbs and their forms
    + """
    added adopted affected affecting affects allow allows announce appear appreciate arise ask
    asked asking asks backed backing began begin beginning beginnings begins believe buy call came
    click come comes consider considering contain containing contains cry describe described
    differ ended ending failing felt fill find finds fix followed following follows found gave get
    gets getting give given gives giving go goes going gone got gotten grouped grouping happens
    help hid ignored indicate indicated indicates join keep keeps kept knew know known knows like
    liked look looking looks made make makes making mean means miss move need needed needing needs
    noted obtain obtained omitted opened opening opens ordered ordering parted parting placed
    pointed pointing present presented presenting presents provided provides put puts ran related
    reserved resulted resulting run said save saw say saying says see seeing seen sees sent show
    showed showing shown shows specified specify specifying stop suggest take taken taking tell
    think thinks took tried tries try trying turn turned turning turns use used uses using want
    wanted wanting wants went wish wonder worked working
    """.split()
    # number words ("one" stays a stop word: mostly a pronoun)
    + """
    zero two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty
    fifty sixty seventy eighty ninety hundred thousand million billion trillion first second
    seconds third fifth half
    """.split()
)

STOP_WORDS: frozenset[str] = frozenset(
    w for w in get_stop_words("english") if not w.isdigit() and w not in CONTENT_WORDS
)


@functools.cache
def _word_re() -> re.Pattern[str]:
    """The word pattern; built on first use (it scans the Unicode tables for combining marks)."""
    ranges: list[tuple[int, int]] = []
    start = prev = -1
    # planes 0-1 hold all combining marks but the variation selectors of plane 14
    for cp in (*range(0x20000), *range(0xE0100, 0xE01F0)):
        if unicodedata.category(chr(cp))[0] == "M":
            if start < 0 or cp != prev + 1:
                if start >= 0:
                    ranges.append((start, prev))
                start = cp
            prev = cp
    if start >= 0:
        ranges.append((start, prev))
    marks = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    run = rf"(?:[^\W_]|[{marks}])+"
    return re.compile(rf"{run}(?:'{run})*")


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\uff07": "'"})


def words(text: str) -> list[str]:
    """The normalised, casefolded words of ``text`` with stop words removed, in order (unstemmed)."""
    if not text:
        return []
    norm = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    return [w for w in _word_re().findall(norm) if w not in STOP_WORDS]


_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    # one per thread: a PyStemmer instance must not be shared between threads
    st: Stemmer.Stemmer | None = getattr(_local, "stemmer", None)
    if st is None:
        st = _local.stemmer = Stemmer.Stemmer("english")
    return st


@functools.lru_cache(maxsize=1 << 17)
def stem(word: str) -> str:
    """The Snowball English stem of one normalised word (cached)."""
    return str(_stemmer().stemWord(word))


def _tokenizer_id() -> str:
    """What :func:`tokenize`'s output depends on beyond this file's rules: the stop-word list, the
    stemmer's and Python's Unicode versions. Snapshots store term counts under it and are
    re-tokenized when it differs (an upgrade that changes any of these changes the terms)."""
    words_crc = zlib.crc32("\n".join(sorted(STOP_WORDS)).encode())
    return (f"t1:stop={len(STOP_WORDS)}/{words_crc:08x}:stemmer={getattr(Stemmer, 'version', lambda: '?')()}"
            f":unicode={unicodedata.unidata_version}")


#: Identifies the tokenizer's output (see ``_tokenizer_id``); bump the "t1" for a rule change here.
TOKENIZER_ID: str = _tokenizer_id()


def tokenize(text: str) -> list[str]:
    """BM25 terms of ``text``: :func:`words`, each stemmed. Empty for empty or stop-word-only text."""
    return [stem(w) for w in words(text)]

