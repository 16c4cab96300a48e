"""The exact fast paths of the original pipeline: gpt1.tokenizer.fixtext against ftfy itself, the word-by-word
spaCy split against spaCy on the whole text (special cases that match across a space), and book paragraphs."""

from __future__ import annotations

import random
import re

import ftfy
import pytest

from gpt1.tokenizer import fixtext
from gpt1.tokenizer.bpe import Tokenizer
from gpt1.tokenizer.pretokenize import (
    NEWLINE,
    PreTokenizer,
    lowercase,
    standardized_pieces,
    text_standardize,
)
from shared_data import require_shared

# Texts ftfy changes, one per step of its fix_and_explain, and the ways steps interact.
CHANGED = [
    "&amp; &lt;b&gt; caf&eacute; P&EACUTE;REZ",  # entities (ASCII, so not "ASCII is safe")
    "â€œmojibakeâ€\x9d and Ã©tÃ©",  # the mojibake decoder: must go to ftfy itself
    "sÃ³ voilÃ le travail",
    "c1 \x80\x93 controls",
    "ﬁne ﬂuﬃ ligatures",
    "ＬＯＵＤ　ＮＯＩＳＥＳ fullwidth",
    "“curly” ‘quotes’ and ’tis",
    "l1\r\nl2\rl3\u2028l4\u2029l5\x85l6",
    "pair \ud83d\ude00 and lone \ud800",
    "\x1b[31mred\x1b[0m",
    "nul\x00 bom\ufeff ctrl\x07",
    "e\u0301 combining",
    "＆amp; fullwidth ampersand, decoded on the second pass",
    "entities &amp; first\nthen a < b\nthen &amp; kept",
    "\u2018single\u2019 \u201cdouble\u201d \u2014 dashes \u2013",
]
UNCHANGED = [
    "",
    "plain ascii, with 'quotes' and \"double\" -- and tabs\tand\nlines",
    "naïve café — an em-dash, accented names: Cintré, Zoë",
    "x" * 500,
    "no < entities &amp; here\nnor &amp; on the next line",  # the first "<" turns entities off for what follows
]


class CountingFtfy:
    """Counts the calls to ftfy.fix_text made from gpt1.tokenizer.fixtext."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.real = ftfy.fix_text
        monkeypatch.setattr(fixtext.ftfy, "fix_text", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def test_fix_text_is_ftfy_where_ftfy_changes_something(monkeypatch):
    counting = CountingFtfy(monkeypatch)
    for text in CHANGED:
        expected = counting.real(text)
        assert expected != text, text  # each case really is one ftfy changes
        assert fixtext.fix_text(text) == expected, text
    assert counting.calls >= 2  # the mojibake cases went to ftfy itself


def test_fix_text_skips_ftfy_where_it_changes_nothing(monkeypatch):
    counting = CountingFtfy(monkeypatch)
    for text in UNCHANGED:
        assert fixtext.fix_text(text) == text == counting.real(text)
    assert counting.calls == 0


def test_fix_text_matches_ftfy_on_random_strings():
    rng = random.Random(0)
    pieces = list("ab \n\r\t&<>;#é’“”—–…ÃÂ©®€™\x80\x93\x9d\x1b[m\x00\ufeffﬁＡ　\u2028\u0301Œœ´°²")
    pieces += ["&amp;", "&lt;", "&#x2019;", "Ã©", "â€™", "\ud83d", "\ude00", "&EACUTE;", "ＦＵＬＬ＆amp;"]
    texts = ["".join(rng.choices(pieces, k=rng.randrange(0, 40))) for _ in range(4000)]
    assert [fixtext.fix_text(t) for t in texts] == [ftfy.fix_text(t) for t in texts]


def test_fix_text_cuts_long_texts_as_ftfy_does(monkeypatch):
    monkeypatch.setattr(fixtext, "_LIMIT", 40)
    rng = random.Random(1)
    for _ in range(300):
        text = "".join(
            rng.choices(["word ", "&amp;", "<", "\n", "“q”", "\r", "x" * 30, "\r\n"], k=rng.randrange(1, 30))
        )
        assert fixtext.fix_text(text) == ftfy.fix_text(text, max_decode_length=40), repr(text)


def test_mojibake_guard_covers_every_badness_match():
    """Every match of ftfy's badness regex holds a guarded character and is no longer than the window."""
    from ftfy.badness import BADNESS_RE

    chars, longest = fixtext._GUARD
    rng = random.Random(2)
    alphabet = sorted(set(BADNESS_RE.pattern) - set("[]|()\\{}?*+^$\n ")) + list("ÃÂ aA.,")
    found = 0
    for _ in range(20000):
        text = "".join(rng.choices(alphabet, k=8))
        for m in BADNESS_RE.finditer(text):
            found += 1
            assert chars.search(m.group()) and len(m.group()) <= longest, m.group()
    assert found > 100


def test_standardized_pieces_are_text_standardize_split():
    rng = random.Random(3)
    alphabet = list("ab-~!\";?+,)(\\/*[]}{|_—–―…´.'x")
    words = ["".join(rng.choices(alphabet, k=rng.randrange(1, 12))) for _ in range(20000)]
    assert [standardized_pieces(w) for w in words] == [text_standardize(w).split(" ") for w in words]


def test_segments_are_the_standardized_text_split():
    """The words of `segments`, standardized one by one, are text_standardize's output split at spaces."""
    pre = PreTokenizer()
    rng = random.Random(4)
    alphabet = list('ab ,.-\n\t\u00a0\u2009\r("') + ["  ", "\n\n", " \n ", "word", "“q”"]
    for _ in range(3000):
        text = "".join(rng.choices(alphabet, k=rng.randrange(0, 25)))
        (words,) = pre.segments(text)
        pieces = [p for w in words for p in (["\n"] if w == NEWLINE else standardized_pieces(w))]
        expected = text_standardize(ftfy.fix_text(lowercase(text)))
        assert pieces == (expected.split(" ") if expected else []), repr(text)


# A special case that matches across a space cannot be applied, but it can block one inside a word: spaCy on the
# whole text differs from spaCy word by word on these (found by search over spaCy's rules).
CROSSING = ['" ) ( o:x', "' ''x", "' x:o )", "'' ( o:x", "')  :>x", "a b ( o:x c", "it 's", "''x x:o ) :)"]


def test_special_cases_across_words_match_hf(hf, tok):
    from spacy.lang.en import English

    spacy_tokenizer = English().tokenizer
    naive = 0
    for text in CROSSING:
        assert tok.encode(text) == hf.encode(text), text
        assert tok.tokenize(text) == hf.tokenize(text), text
        whole = [t.text for t in spacy_tokenizer(text_standardize(text))]
        word_by_word = [t.text for w in text_standardize(text).split(" ") for t in spacy_tokenizer(w)]
        naive += whole != word_by_word
    assert naive >= 4  # the cases are real: splitting word by word without care would get them wrong


@pytest.fixture(scope="module")
def hf(vocab_dir):
    transformers = pytest.importorskip("transformers", reason="transformers (the reference) is not installed")
    return transformers.OpenAIGPTTokenizer(
        vocab_file=str(vocab_dir / "encoder_bpe_40000.json"), merges_file=str(vocab_dir / "vocab_40000.bpe")
    )


@pytest.fixture(scope="module")
def tok(vocab_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(vocab_dir)


def book_paragraphs(per_book: int = 6) -> list[str]:
    """Hard-wrapped paragraphs of every shared book with curly quotes, em-dashes or accented letters."""
    out = []
    for book in sorted(require_shared("data", "gutenberg-books").glob("*.txt")):
        paragraphs = [p for p in re.split(r"\n\s*\n", book.read_text(encoding="utf-8")) if "\n" in p.strip()]
        for pattern in ("[“”‘’]", "—", "[À-ÿ]"):
            out += [p for p in paragraphs if re.search(pattern, p)][:per_book]
    return out


def test_book_paragraphs_match_hf(hf, tok):
    texts = book_paragraphs()
    assert len(texts) > 300
    assert any("é" in t for t in texts) and any("—" in t for t in texts) and any("“" in t for t in texts)
    bad = [t for t in texts if tok.encode(t) != hf.encode(t)]
    assert not bad, f"{len(bad)} of {len(texts)} book paragraphs differ from HF, first: {bad[0]!r}"
    joined = "\n\n".join(texts[:40])  # and as one long text: caches, line breaks, paragraphs together
    assert tok.encode(joined) == hf.encode(joined)


def test_letters_only_shortcut_is_spacy():
    """Stretches of ASCII letters skip spaCy only because no affix regex can match them: proven on the patterns."""
    import string

    from gpt1.tokenizer.pretokenize import _never_matches_letters

    assert not _never_matches_letters(re.compile(r"\w|[.]")) and _never_matches_letters(re.compile(r"(?<=[0-9])km|-"))
    pre = PreTokenizer()
    spacy_tokenizer = pre._tokenizer()
    assert pre._letters_plain
    rng = random.Random(5)
    words = ["".join(rng.choices(string.ascii_letters, k=rng.randrange(1, 12))) for _ in range(3000)]
    words += ["dont", "cant", "gonna", "im", "Im", "ive", "youre", "km", "ft", "s", "em", "nt", "ca", "wo"]
    assert [pre._spacy_split(w) for w in words] == [[t.text for t in spacy_tokenizer(w)] for w in words]


class CountingSpacy:
    """spaCy's tokenizer, counting the stretches it is called on (its affix finders pass through)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, text):
        self.calls += 1
        return self.tokenizer(text)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_suffix_shortcut_is_spacy():
    """ASCII letters plus one suffix skip spaCy only where its own finders and rules leave just that cut."""
    import string

    pre = PreTokenizer()
    spacy_tokenizer = pre._tokenizer()
    rng = random.Random(6)
    heads = ["it", "don", "ca", "wo", "mr", "dr", "a", "p", "st", "inc", "jan", "etc", "i", "he", "she", "there"]
    heads += ["dont", "cant", "gonna", "im", "youre", "whats", "lemme", "Dont"]  # special cases themselves
    heads += ["".join(rng.choices(string.ascii_lowercase + "AZ", k=rng.randrange(1, 9))) for _ in range(300)]
    tails = [".", "..", "...", ":", ";", "!", "?", ",", "'", '"', "'s", "'S", "’s", "n't", "'ll", "'re", "'d", "'m"]
    tails += ["'ve", ")", "]", "%", "km", "s", "-", "’", "!!", "?!", ".)", "'.", "):", "x", ":)", ":p", "a.m."]
    stretches = [h + t for h in heads for t in tails]
    counting = pre._spacy = CountingSpacy(spacy_tokenizer)
    assert [pre._spacy_split(s) for s in stretches] == [[t.text for t in spacy_tokenizer(s)] for s in stretches]
    assert counting.calls < len(stretches) / 2  # the shortcut was taken


def test_plain_words_split_alone():
    import string

    pre, reference = PreTokenizer(), PreTokenizer()
    pre._tokenizer()
    rng = random.Random(7)
    words = ["".join(rng.choices(string.ascii_letters, k=rng.randrange(1, 10))) for _ in range(3000)]
    words += sorted(t for t in pre._befores | pre._afters | set(pre._rules) if t.isascii() and t.isalpha())
    plain = [w for w in words if pre.plain(w)]
    assert len(plain) > 2000 and not pre.plain("it") and not pre.plain("dr") and not pre.plain("o")
    assert [tuple(reference.split(w)) for w in plain] == [((w.lower(),), frozenset(), frozenset()) for w in plain]
