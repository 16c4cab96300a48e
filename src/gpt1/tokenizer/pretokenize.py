"""GPT-1's pre-tokenisation, shared by `Tokenizer.encode` and BPE learning: lowercase → ftfy → `text_standardize` →
spaCy's rule-based English split, with each literal `<unk>` kept apart (it becomes id 0, as in HF's tokenizer).

spaCy always sees the whole standardized text, as in HF: its special-case pass matches across whitespace, so
splitting word by word would differ in rare cases. ftfy is skipped on plain printable ASCII, where it is the
identity, and `text_standardize` uses one character class instead of OpenAI's 18 alternatives.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import ftfy

__all__ = ["UNK", "PreTokenizer", "default_pretokenizer", "lowercase", "pretokenize", "text_standardize", "words"]

UNK = "<unk>"

# ftfy.fix_text is the identity on tab, newline and printable ASCII except "&" (HTML entities); see the tests.
_NEEDS_FTFY = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")
# OpenAI's (-+|~+|!+|...) as one class: a run of one of these characters gets a space on each side.
_PUNCTUATION_RUN = re.compile(r"""([-~!";?+,)(\\/*\[\]}{|_])\1*""")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_SPACES = re.compile(r"[^\S\n]+")


def text_standardize(text: str) -> str:
    """OpenAI's clean-up of dashes, ellipses, accents, spacing around punctuation, and whitespace (lines kept)."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
    text = _PUNCTUATION_RUN.sub(r" \g<0> ", text)
    text = _LINE_BREAK.sub(" \n ", text)
    return _SPACES.sub(" ", text).strip()


def lowercase(text: str) -> str:
    """Lowercase character by character, as HF does (str.lower would turn a final Σ into ς, not σ)."""
    return "".join(map(str.lower, text)) if "Σ" in text else text.lower()


class PreTokenizer:
    """Text → spaCy docs of its standardized segments; spaCy's tokenizer is built on first use (it takes a second)
    and is not pickled, so each worker process builds its own."""

    def __init__(self) -> None:
        self._spacy: Any = None

    def docs(self, text: str) -> Iterator[Any]:
        """spaCy docs of the standardized text between literal `<unk>`s, with None for each `<unk>`, as HF splits it."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        for i, segment in enumerate(lowercase(text).split(UNK)):
            if i:
                yield None
            if _NEEDS_FTFY.search(segment):
                segment = ftfy.fix_text(segment)
            yield self._tokenizer()(text_standardize(segment))

    def reset(self) -> None:
        """Drop spaCy's tokenizer (its string store only grows); the next call builds a fresh one."""
        self._spacy = None

    def _tokenizer(self) -> Any:
        """spaCy's rule-based English tokenizer (no model download)."""
        if self._spacy is None:
            from spacy.lang.en import English

            nlp = English()
            nlp.vocab.lex_attr_getters = {}  # we read only token text: skip computing shape, norm, ... of new words
            nlp.tokenizer.max_cache_size = 1 << 20  # its per-span cache (default 10k spans) only affects speed
            self._spacy = nlp.tokenizer
        return self._spacy

    def __getstate__(self) -> dict[str, Any]:
        return {"_spacy": None}


@functools.cache
def default_pretokenizer() -> PreTokenizer:
    """One shared `PreTokenizer` per process, for callers that need only words (BPE learning)."""
    return PreTokenizer()


def words(text: str) -> list[str]:
    """The words `Tokenizer.encode` would run BPE on (spaCy's whitespace tokens and literal `<unk>`s dropped)."""
    found = [tok.text.lower() for doc in default_pretokenizer().docs(text) if doc is not None for tok in doc]
    return [w for w in found if w.strip()]


def pretokenize(texts: Iterable[str]) -> list[list[str]]:
    """`words` of each text."""
    return [words(text) for text in texts]
