"""GPT-1's pre-tokenisation, shared by `Tokenizer.encode` and BPE learning: lowercase → ftfy → `text_standardize` →
spaCy's rule-based English split, with each literal `<unk>` kept apart (it becomes id 0, as in HF's tokenizer).

HF runs spaCy on the whole standardized text; here each whitespace-separated word is split on its own (and cached
by the caller), which gives the same tokens:
- `text_standardize` puts spaces around runs of punctuation, which never cross whitespace, and turns each whitespace
  run into " \\n " if it holds a line break, else into " ". So the standardized text is the words standardized one
  by one, joined by spaces, with a "\\n" between two words on different lines.
- spaCy cuts at whitespace and tokenizes each stretch between spaces on its own (its own cache is keyed by that
  stretch); a line break and the space after it become one whitespace token, "\\n ".
- The one step that looks across stretches is its special-case matcher (e.g. ":)" seen as ":" ")"). A match across a
  space is never applied (no rule holds a space but " " itself), but it can block an overlapping match inside a
  word: "( o:x" gives "(", "o", ":", "x" while "o:x" alone gives "o", ":x". Such a match needs one stretch to end,
  and the next to start, with neighbouring tokens of a multi-token special case; each stretch and word records the
  tokens it may offer (`Split.firsts`, `Split.lasts`), and neighbours that may match are split together. No special
  case holds the line-break token, so lines never interact.
ftfy is `gpt1.tokenizer.fixtext.fix_text` (ftfy's result, exactly, at a fraction of its cost), and
`text_standardize` uses one character class instead of OpenAI's 18 alternatives.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from gpt1.tokenizer.fixtext import fix_text

__all__ = [
    "NEWLINE",
    "UNK",
    "PreTokenizer",
    "Split",
    "default_pretokenizer",
    "lowercase",
    "pretokenize",
    "standardized_pieces",
    "text_standardize",
    "words",
]

UNK = "<unk>"
# Stands for a line break between two words in `PreTokenizer.segments`: ftfy removes NUL, so no word holds it.
NEWLINE = "\x00"

# OpenAI's (-+|~+|!+|...) as one class: a run of one of these characters gets a space on each side.
_PUNCTUATION_RUN = re.compile(r"""([-~!";?+,)(\\/*\[\]}{|_])\1*""")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_SPACES = re.compile(r"[^\S\n]+")
# What text_standardize changes in a word (no whitespace): the five characters it replaces and the class above;
# and the pieces it cuts a word into (runs of one of those characters, and what lies between them).
_STANDARDIZED = re.compile(r"""[-~!";?+,)(\\/*\[\]}{|_—–―…´]""")
_PIECES = re.compile(r"""(([-~!";?+,)(\\/*\[\]}{|_])\2*|[^-~!";?+,)(\\/*\[\]}{|_]+)""")


def text_standardize(text: str) -> str:
    """OpenAI's clean-up of dashes, ellipses, accents, spacing around punctuation, and whitespace (lines kept)."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
    text = _PUNCTUATION_RUN.sub(r" \g<0> ", text)
    text = _LINE_BREAK.sub(" \n ", text)
    return _SPACES.sub(" ", text).strip()


def standardized_pieces(word: str) -> list[str]:
    """`text_standardize(word).split(" ")` for a word without whitespace, without the regex substitutions."""
    word = word.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
    return [piece for piece, _ in _PIECES.findall(word)]


def lowercase(text: str) -> str:
    """Lowercase character by character, as HF does (str.lower would turn a final Σ into ς, not σ)."""
    return "".join(map(str.lower, text)) if "Σ" in text else text.lower()


class Split(NamedTuple):
    """A word's (or stretch's) lowercased spaCy tokens, with the tokens spaCy's special-case matcher may see at its
    start (`firsts`) and end (`lasts`) that could go on from, or to, a neighbour: empty for most words."""

    tokens: tuple[str, ...]
    firsts: frozenset[str]
    lasts: frozenset[str]


class PreTokenizer:
    """Text → the lowercased spaCy tokens HF's slow tokenizer runs BPE on, word by word. spaCy's tokenizer is built
    on first use (it takes a second) and is not pickled, so each worker process builds its own."""

    def __init__(self) -> None:
        self._spacy: Any = None
        # standardized stretch (no whitespace) -> its tokens joined by spaces, and (firsts, lasts) of flagged ones
        # joined by spaces: strings (and tuples of strings), so the garbage collector never walks the caches.
        self._stretches: dict[str, str] = {}
        self._flags: dict[str, tuple[str, str]] = {}
        self._newline = Split((), frozenset(), frozenset())  # the line-break token(s) spaCy makes of " \n "
        self._cases: dict[str, list[str]] = {}  # multi-token special case -> its tokens as the matcher sees them
        self._pairs: frozenset[tuple[str, str]] = frozenset()  # neighbouring tokens in one of those
        self._befores: frozenset[str] = frozenset()  # first tokens of the pairs
        self._afters: frozenset[str] = frozenset()  # second tokens of the pairs
        self._end_cases: dict[str, str] = {}  # see `_tokenizer`
        self._start_cases: dict[str, str] = {}
        self._end_lengths: dict[str, tuple[int, ...]] = {}
        self._start_lengths: dict[str, tuple[int, ...]] = {}
        self._rules: dict[str, Any] = {}  # spaCy's special cases
        self._affix_checks = False  # whether `_spacy_split` may test spaCy's rules itself
        self._crossings: dict[str, bool] = {}  # see `_crosses`
        self._plain_tails: Any = frozenset()
        self._letters_plain = False  # whether no affix regex can match a string of ASCII letters

    def segments(self, text: str) -> list[list[str] | None]:
        """The words of each stretch of `text` between literal `<unk>`s (None for each `<unk>`), after lowercasing
        and ftfy, with NEWLINE for each whitespace run that holds a line break, as HF splits and cleans it."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out: list[list[str] | None] = []
        for i, segment in enumerate(lowercase(text).split(UNK)):
            if i:
                out.append(None)
            segment = fix_text(segment)
            if "\n" not in segment:
                out.append(segment.split())
                continue
            # One NEWLINE for each whitespace run holding a line break, none at either end (text_standardize strips
            # those): the same as splitting `_LINE_BREAK.sub(" " + NEWLINE + " ", segment)`, line by line.
            found: list[str] = []
            for line in segment.split("\n"):
                line_words = line.split()
                if line_words:
                    if found:
                        found.append(NEWLINE)
                    found += line_words
            out.append(found)
        return out

    def split(self, word: str) -> Split:
        """Tokens of one word of `segments` (NEWLINE: the line-break token)."""
        if word == NEWLINE:
            self._tokenizer()
            return self._newline
        stretches = standardized_pieces(word) if _STANDARDIZED.search(word) else [word]
        splits = [self._stretch(s) for s in stretches]
        if len(splits) == 1:
            return splits[0]
        tokens: list[str] = []
        for start, end in self._groups(splits):
            tokens += splits[start].tokens if end == start + 1 else self._spacy_tokens(" ".join(stretches[start:end]))
        return Split(tuple(tokens), splits[0].firsts, splits[-1].lasts)

    def plain(self, word: str) -> bool:
        """Whether `split(word)` is the word alone, lowercased, with no flags, as for most new words: ASCII letters
        that are no special case and no token of one, where no affix can match (known once spaCy is built)."""
        return (
            self._letters_plain
            and word.isascii()
            and word.isalpha()
            and word not in self._rules
            and word not in self._befores
            and word not in self._afters
            and word[-1] not in self._end_lengths
            and word[0] not in self._start_lengths
        )

    def split_together(self, words: list[str]) -> tuple[str, ...]:
        """Tokens of neighbouring words (no NEWLINE among them) whose boundaries a special case may cross."""
        return tuple(self._spacy_tokens(text_standardize(" ".join(words))))

    def may_cross(self, lasts: Iterable[str], firsts: Iterable[str]) -> bool:
        """Whether a special case may match across the space between a word ending in one of `lasts` and a word
        starting with one of `firsts`."""
        firsts = list(firsts)
        return any((a, b) in self._pairs for a in lasts for b in firsts)

    def runs(self, words: list[str], tails: dict[str, str], heads: dict[str, str]) -> list[tuple[int, int]]:
        """[start, end) of each run of two or more neighbouring `words` to split together, because a special case
        may match across each space in it (`tails`/`heads`: the flagged words' `lasts`/`firsts`, joined by
        spaces)."""
        if len(words) < 2:
            return []
        # Words a special case may reach into from the word before are rarer than the reverse: look for those first.
        after = itertools.compress(range(1, len(words)), map(heads.__contains__, words[1:]))
        crossing = [
            i - 1 for i in after if words[i - 1] in tails and self._crosses(tails[words[i - 1]], heads[words[i]])
        ]

        out: list[tuple[int, int]] = []
        for i in crossing:
            if out and out[-1][1] == i + 1:
                out[-1] = (out[-1][0], i + 2)
            else:
                out.append((i, i + 2))
        return out

    def tokens(self, text: str) -> list[str | None]:
        """All tokens of `text` in order (None for each literal `<unk>`): the strings HF's slow tokenizer runs BPE on."""
        out: list[str | None] = []
        for words in self.segments(text):
            if words is None:
                out.append(None)
                continue
            splits = [self.split(w) for w in words]
            parts = [s.tokens for s in splits]
            tails = {w: " ".join(s.lasts) for w, s in zip(words, splits) if s.lasts}
            heads = {w: " ".join(s.firsts) for w, s in zip(words, splits) if s.firsts}
            for start, end in self.runs(words, tails, heads):
                parts[start:end] = [self.split_together(words[start:end])] + [()] * (end - start - 1)
            for part in parts:
                out += part
        return out

    def _crosses(self, lasts: str, firsts: str) -> bool:
        """`may_cross` of tokens joined by spaces, remembered: there are few distinct pairs of those."""
        key = lasts + NEWLINE + firsts  # no token holds NEWLINE
        found = self._crossings.get(key)
        if found is None:
            found = self._crossings[key] = self.may_cross(lasts.split(" "), firsts.split(" "))
        return found

    def reset(self) -> None:
        """Drop spaCy's tokenizer (its string store only grows) and the cache; the next call builds a fresh one."""
        self._spacy = None
        self._stretches = {}
        self._flags = {}

    def _groups(self, splits: list[Split]) -> list[tuple[int, int]]:
        """[start, end) of the stretches of one word to split alone or, where a special case may cross, together."""
        out, start = [], 0
        for i in range(1, len(splits) + 1):
            if i == len(splits) or not (
                splits[i - 1].lasts and splits[i].firsts and self.may_cross(splits[i - 1].lasts, splits[i].firsts)
            ):
                out.append((start, i))
                start = i
        return out

    def _stretch(self, stretch: str) -> Split:
        found = self._stretches.get(stretch)
        if found is not None:
            flags = self._flags.get(stretch)
            if flags is None:
                return Split(tuple(found.split(" ")), _NONE, _NONE)
            return Split(tuple(found.split(" ")), _unjoined(flags[0]), _unjoined(flags[1]))
        return self._store(stretch, self._spacy_split(stretch))

    def _store(self, stretch: str, raw: list[str]) -> Split:
        """Cache the split of a stretch whose spaCy tokens are `raw`."""
        # The matcher sees the tokens before it merges a special case: where one ends (or starts) the stretch, that
        # case's own tokens, else the final ones. Only those that go on to (or from) a neighbour matter.
        ends, starts = self._end_lengths.get(stretch[-1]), self._start_lengths.get(stretch[0])
        if not (ends or starts or raw[-1] in self._befores or raw[0] in self._afters):  # most stretches
            tokens = tuple(map(str.lower, raw))
            self._stretches[stretch] = " ".join(tokens)
            return Split(tokens, _NONE, _NONE)
        lasts = {raw[-1]} & self._befores
        for n in self._end_lengths.get(stretch[-1], ()):
            if (t := self._end_cases.get(stretch[-n:])) is not None:
                lasts.add(t)
        firsts = {raw[0]} & self._afters
        for n in self._start_lengths.get(stretch[0], ()):
            if (t := self._start_cases.get(stretch[:n])) is not None:
                firsts.add(t)
        tokens = tuple(map(str.lower, raw))
        self._stretches[stretch] = " ".join(tokens)
        if firsts or lasts:
            self._flags[stretch] = (" ".join(firsts), " ".join(lasts))  # no token of a special case holds a space
        return Split(tokens, _frozen(firsts), _frozen(lasts))

    def _spacy_split(self, stretch: str) -> list[str]:
        """spaCy's tokens of one stretch (no whitespace), as its tokenizer makes them. Where no special case, prefix,
        suffix or infix applies, its `_tokenize_affixes` keeps the stretch whole and its special-case matcher finds
        nothing in a one-token doc that is no special case; that is tested with its own rules and regexes, which
        skips building a Doc."""
        tokenizer = self._tokenizer()
        if self._letters_plain and stretch.isascii() and stretch.isalpha() and stretch not in self._rules:
            return [stretch]  # no prefix, suffix or infix regex can match ASCII letters (checked on the patterns)
        if self._affix_checks and stretch not in self._rules and not tokenizer.find_prefix(stretch):
            cut = tokenizer.find_suffix(stretch)
            if not cut:
                if not tokenizer.find_infix(stretch):
                    return [stretch]
            elif self._letters_plain:
                # `_split_affixes` cuts the suffix off, then finds nothing in ASCII letters that are no special case;
                # the matcher then finds no special case in [head, tail]: its only keys of those tokens would be
                # head, tail or the stretch (no key holds whitespace but the one-character ones).
                head, tail = stretch[:-cut], stretch[-cut:]
                if head.isascii() and head.isalpha() and head not in self._rules and tail in self._plain_tails:
                    return [head, tail]
        return [t.text for t in tokenizer(stretch)]

    def _spacy_tokens(self, text: str) -> list[str]:
        return [t.text.lower() for t in self._tokenizer()(text)]

    def _tokenizer(self) -> Any:
        """spaCy's rule-based English tokenizer (no model download), and what its special cases may match."""
        if self._spacy is None:
            import spacy
            from spacy.lang.en import English
            from spacy.tokenizer import Tokenizer as SpacyTokenizer

            nlp = English()
            nlp.vocab.lex_attr_getters = {}  # we read only token text: skip computing shape, norm, ... of new words
            tokenizer = nlp.tokenizer
            # The matcher's patterns are the special cases as tokenized without special cases (spaCy's own
            # `_tokenize_affixes(string, False)`): a tokenizer with the same rules but no special cases makes them.
            bare = SpacyTokenizer(
                nlp.vocab,
                rules={},
                prefix_search=tokenizer.prefix_search,
                suffix_search=tokenizer.suffix_search,
                infix_finditer=tokenizer.infix_finditer,
                token_match=tokenizer.token_match,
                url_match=tokenizer.url_match,
            )
            cases = {key: [t.text for t in bare(key)] for key in tokenizer.rules}
            self._cases = {key: pattern for key, pattern in cases.items() if len(pattern) > 1}
            self._pairs = frozenset((p[i], p[i + 1]) for p in self._cases.values() for i in range(len(p) - 1))
            self._befores = frozenset(a for a, _ in self._pairs)
            self._afters = frozenset(b for _, b in self._pairs)
            # Special cases whose last (first) token may go on from (to) a neighbour, by their length and last
            # (first) character: what `_stretch` looks for at a stretch's ends.
            self._end_cases = {k: p[-1] for k, p in self._cases.items() if p[-1] in self._befores}
            self._start_cases = {k: p[0] for k, p in self._cases.items() if p[0] in self._afters}
            self._end_lengths = _lengths_by(self._end_cases, -1)
            self._start_lengths = _lengths_by(self._start_cases, 0)
            middle = [t.text for t in tokenizer("a \n a")][1:-1]  # the tokens " \n " becomes between two words
            if any(c.isspace() for pair in self._pairs for token in pair for c in token):
                raise RuntimeError("a spaCy special case spans whitespace; gpt1's word-by-word split cannot handle it")
            self._newline = Split(tuple(t.lower() for t in middle), frozenset(), frozenset())
            self._rules = tokenizer.rules
            # Suffixes that are no special case, or one that keeps them as one token of the same text.
            self._plain_tails = _PlainTails(self._rules)
            # The control flow `_spacy_split` follows is spaCy 3's; token_match would be tested before the affixes.
            self._affix_checks = spacy.__version__.startswith("3.") and tokenizer.token_match is None
            self._letters_plain = self._affix_checks and all(
                _never_matches_letters(getattr(f, "__self__", None))
                for f in (tokenizer.prefix_search, tokenizer.suffix_search, tokenizer.infix_finditer)
            )
            self._stretches = {}
            self._flags = {}
            self._spacy = tokenizer
        return self._spacy

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_spacy": None, "_stretches": {}, "_flags": {}}


_NONE: frozenset[str] = frozenset()
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _never_matches_letters(pattern: Any) -> bool:
    """Whether the compiled regex `pattern` can never match in a string of ASCII letters: every alternative needs a
    character (itself, or one a lookaround requires next to it) from a set that holds no letter. False when unsure."""
    if not isinstance(pattern, re.Pattern) or pattern.flags & re.IGNORECASE:
        return False
    try:
        from re import _parser  # type: ignore[attr-defined]
    except ImportError:  # Python 3.10
        import sre_parse as _parser  # type: ignore[no-redef]
    c = _parser

    def chars(op: Any, av: Any) -> set[str] | None:  # what one item matches, if it is a plain set of characters
        if op is c.LITERAL:
            return {chr(av)}
        if op is c.IN:
            found: set[str] = set()
            for kind, value in av:
                if kind is c.LITERAL:
                    found.add(chr(value))
                elif kind is c.RANGE:
                    found |= {chr(i) for i in range(value[0], min(value[1], 0x7F) + 1)} | {chr(value[1])}
                else:
                    return None
            return found
        return None

    def needs_non_letter(items: Any) -> bool:  # whether a sequence of items needs a non-letter somewhere
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
                found = needs_non_letter(av[2].data)  # the repeated part occurs at least once
            elif op is c.ASSERT:  # a lookahead / lookbehind: what it needs must be in the string too
                found = needs_non_letter(av[1].data)
            elif op is c.BRANCH:
                found = all(needs_non_letter(branch.data) for branch in av[1])
            elif op is c.SUBPATTERN:
                found = needs_non_letter(av[-1].data)
            else:
                chars_of = chars(op, av)
                found = chars_of is not None and not chars_of & _LETTERS
            if found:
                return True
        return False

    return needs_non_letter(_parser.parse(pattern.pattern, pattern.flags).data)


class _PlainTails:
    """`tail in _PlainTails(rules)`: whether a suffix token is no special case, or one that gives that token alone."""

    def __init__(self, rules: dict[str, Any]) -> None:
        from spacy.attrs import ORTH

        self._rules = rules
        self._same = frozenset(k for k, v in rules.items() if [t.get(ORTH) for t in v] == [k])
        # The shortcut's argument needs every key holding whitespace to be one character.
        self._usable = all(len(k) == 1 for k in rules if any(c.isspace() for c in k))

    def __contains__(self, tail: str) -> bool:
        return self._usable and (tail not in self._rules or tail in self._same)


def _lengths_by(keys: Iterable[str], end: int) -> dict[str, tuple[int, ...]]:
    """The lengths of `keys`, by their first (`end`=0) or last (-1) character."""
    found: dict[str, set[int]] = {}
    for key in keys:
        found.setdefault(key[end], set()).add(len(key))
    return {c: tuple(sorted(n)) for c, n in found.items()}


def _unjoined(tokens: str) -> frozenset[str]:
    return frozenset(tokens.split(" ")) if tokens else _NONE


def _frozen(tokens: set[str]) -> frozenset[str]:
    return frozenset(tokens) if tokens else _NONE


@functools.cache
def default_pretokenizer() -> PreTokenizer:
    """One shared `PreTokenizer` per process, for callers that need only words (BPE learning)."""
    return PreTokenizer()


def words(text: str) -> list[str]:
    """The words `Tokenizer.encode` would run BPE on (spaCy's whitespace tokens and literal `<unk>`s dropped)."""
    return [t for t in default_pretokenizer().tokens(text) if t is not None and t.strip()]


def pretokenize(texts: Iterable[str]) -> list[list[str]]:
    """`words` of each text."""
    return [words(text) for text in texts]
