"""`ftfy.fix_text`, exactly, without most of its cost: ftfy's own fixers run on the whole text at once, and its
mojibake decoder is skipped only where ftfy's own test says it would change nothing.

ftfy fixes a text line by line (`fix_and_explain` on each line, looping over its fixers until the line stops
changing), with HTML entities decoded until the first line that holds a `<`. Every fixer but the mojibake decoder
works character by character or with a regex that never spans a line break, so running it on many lines at once
gives the concatenation of the per-line results, and looping until the whole text is stable gives each line its own
fixed point. The decoder changes a line only when `ftfy.badness.is_bad` finds a match in it (ftfy returns the text
untouched first thing otherwise). That regex's matches are at most a few characters long and each holds one of a
few hundred characters, both read off the compiled pattern here, so searching small windows around those characters
decides it; wherever a window matches, the text goes to `ftfy.fix_text` itself. Translations that would change
nothing are skipped by a regex search first (searching is much faster than translating).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import ftfy
from ftfy import chardata, fixes
from ftfy.badness import BADNESS_RE

__all__ = ["fix_text"]

# The configuration `ftfy.fix_text` runs with (HF calls it with none): the steps below are these, in ftfy's order.
_DEFAULTS = ftfy.TextFixerConfig()
_EXPECTED = ftfy.TextFixerConfig(
    unescape_html="auto",
    remove_terminal_escapes=True,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=True,
    fix_character_width=True,
    uncurl_quotes=True,
    fix_line_breaks=True,
    fix_surrogates=True,
    remove_control_chars=True,
    normalization="NFC",
    max_decode_length=_DEFAULTS.max_decode_length,
)
# The fast path follows ftfy 6's fix_and_explain step by step; any other ftfy, or other defaults, gets ftfy itself.
_SUPPORTED = ftfy.__version__.startswith("6.") and _DEFAULTS == _EXPECTED
_LIMIT = _DEFAULTS.max_decode_length  # ftfy cuts lines longer than this; texts of whole lines up to it are blocks here
# The non-ASCII characters of English book text (curly quotes, dashes): when a badness branch offers several
# mandatory character sets, one without them is looked for, so fewer windows are searched. It affects only speed.
_FREQUENT = set("\u2018\u2019\u201c\u201d\u2014\u2013\u2026\u00a0")


def _char_class(chars: set[str]) -> re.Pattern[str] | None:
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]") if chars else None


def _changing(table: dict[int, int | str | None]) -> re.Pattern[str] | None:
    """The characters a `str.translate` table changes, as a regex class (None when it changes none)."""
    return _char_class({chr(k) for k, v in table.items() if v != k and v != chr(k)})


def _mojibake_guard() -> tuple[re.Pattern[str], int] | None:
    """(a character class of which every match of ftfy's badness regex holds one, the longest match), or None when
    the regex is not a plain alternation of fixed-width branches, each with a mandatory non-ASCII character set."""
    try:
        from re import _parser  # type: ignore[attr-defined]
    except ImportError:  # Python 3.10
        import sre_parse as _parser  # type: ignore[no-redef]
    c = _parser
    if BADNESS_RE.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL):
        return None
    tree = _parser.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    longest = tree.getwidth()[1]
    if longest >= c.MAXREPEAT or len(tree.data) != 1 or tree.data[0][0] is not c.BRANCH:
        return None

    def charset(op, av) -> set[str] | None:  # the characters one top-level item matches, if it is a plain set
        if op is c.LITERAL:
            return {chr(av)}
        if op is not c.IN:
            return None
        found: set[str] = set()
        for kind, value in av:
            if kind is c.LITERAL:
                found.add(chr(value))
            elif kind is c.RANGE:
                found |= {chr(i) for i in range(value[0], value[1] + 1)}
            else:  # NEGATE, CATEGORY (\w, \s, ...): could match anything
                return None
        return found

    needed: set[str] = set()
    for branch in tree.data[0][1][1]:
        options = [s for s in (charset(op, av) for op, av in branch.data) if s and all(ord(ch) > 127 for ch in s)]
        if not options:
            return None
        needed |= min(options, key=lambda s: (len(s & _FREQUENT), len(s)))
    return _char_class(needed), longest  # type: ignore[return-value]


_GUARD = _mojibake_guard() if _SUPPORTED else None
# MULTILINE: `^` then matches at every line start, as it does when ftfy tests each line on its own.
_BADNESS_LINES = re.compile(BADNESS_RE.pattern, BADNESS_RE.flags | re.MULTILINE)
_LIGATURES = _changing(chardata.LIGATURES)
_WIDTH = _changing(chardata.WIDTH_MAP)
_CONTROL = _changing(chardata.CONTROL_CHARS)
# In ASCII text only these can change anything: an entity's "&", "\r" (line breaks), ESC (terminal escapes) and the
# ASCII characters of the translation tables (control characters). ftfy's other steps act on non-ASCII only.
_ASCII_TRIGGERS = {"&", "\r", "\x1b"} | {
    chr(k) for table in (chardata.LIGATURES, chardata.WIDTH_MAP, chardata.CONTROL_CHARS) for k in table if k < 128
}
_ASCII_CHANGES = _char_class(_ASCII_TRIGGERS)


def fix_text(text: str) -> str:
    """`ftfy.fix_text(text)` with its default configuration: the same string, for every input."""
    if text.isascii() and not _ASCII_CHANGES.search(text):  # type: ignore[union-attr]
        return text
    if _GUARD is None:
        return ftfy.fix_text(text)
    if len(text) <= _LIMIT:
        return _fix_lines(text, "auto")
    out, pos, html = [], 0, "auto"
    while pos < len(text):  # ftfy's own cut: whole lines, and lines longer than the limit in pieces of the limit
        end = text.rfind("\n", pos, pos + _LIMIT) + 1
        end = end if end > pos else min(pos + _LIMIT, len(text))
        out.append(_fix_lines(text[pos:end], html))
        html = False if "<" in text[pos:end] else html
        pos = end
    return "".join(out)


def _fix_lines(text: str, html: str | bool) -> str:
    """Fixed `text` (whole ftfy segments); `html` "auto" decodes entities up to the first line holding a `<`."""
    if html == "auto" and "<" in text:
        start = text.rfind("\n", 0, text.find("<")) + 1
        return _fix_block(text[:start], True) + _fix_block(text[start:], False)
    return _fix_block(text, html == "auto")


def _fix_block(text: str, html: bool) -> str:
    fixed = _fix_together(text, html)
    if fixed is None:
        return ftfy.fix_text(text, unescape_html="auto" if html else False)
    return fixed


def _fix_together(text: str, html: bool) -> str | None:
    """fix_and_explain's loop run over all lines of `text` at once, or None where its mojibake decoder may act."""
    while True:
        before = text
        if html and "&" in text:
            text = fixes.unescape_html(text)
        ascii_only = text.isascii()
        if not ascii_only and _may_be_mojibake(text):
            return None
        if _ANY_FIX.search(text):
            for needed, fixer in _FIXERS:
                if needed(text):
                    text = fixer(text)
        if not ascii_only:  # NFC leaves ASCII as it is
            text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def _may_be_mojibake(text: str) -> bool:
    """Whether `ftfy.badness.is_bad` may be true on some line of `text` (never False when it is)."""
    chars, longest = _GUARD  # type: ignore[misc]
    lo = hi = -1
    for m in chars.finditer(text):  # every match lies within longest - 1 characters of one of these characters
        start, end = max(0, m.start() - longest + 1), m.start() + longest
        if start > hi:
            if hi > lo and _BADNESS_LINES.search(text, lo, hi):
                return True
            lo = start
        hi = end
    return hi > lo and _BADNESS_LINES.search(text, lo, hi) is not None


def _has(pattern: re.Pattern[str] | None) -> Callable[[str], bool]:
    return (lambda text: pattern.search(text) is not None) if pattern is not None else (lambda text: False)


_LINE_BREAKS = "\r\u2028\u2029\x85"  # what fix_line_breaks replaces
# fix_and_explain's fixers after the decoder, in its order; each skipped when a search shows it would change nothing.
_FIXERS: list[tuple[Callable[[str], bool], Callable[[str], str]]] = [
    (_has(chardata.C1_CONTROL_RE), fixes.fix_c1_controls),
    (_has(_LIGATURES), fixes.fix_latin_ligatures),
    (_has(_WIDTH), fixes.fix_character_width),
    (
        lambda text: bool(chardata.SINGLE_QUOTE_RE.search(text) or chardata.DOUBLE_QUOTE_RE.search(text)),
        fixes.uncurl_quotes,
    ),
    (_has(_char_class(set(_LINE_BREAKS))), fixes.fix_line_breaks),
    (_has(fixes.SURROGATE_RE), fixes.fix_surrogates),
    (lambda text: "\x1b" in text, fixes.remove_terminal_escapes),
    (_has(_CONTROL), fixes.remove_control_chars),
]
# Any character one of them acts on: one search usually shows that none of them would change anything.
_ANY_FIX = re.compile(
    "|".join(
        p.pattern
        for p in (
            chardata.C1_CONTROL_RE,
            _LIGATURES,
            _WIDTH,
            chardata.SINGLE_QUOTE_RE,
            chardata.DOUBLE_QUOTE_RE,
            _char_class(set(_LINE_BREAKS)),
            fixes.SURROGATE_RE,
            re.compile("\x1b"),
            _CONTROL,
        )
        if p is not None
    )
)
