"""Train a small GPT-1-style BPE on a corpus, for when GPT-1's own vocabulary files are not at hand (the offline demo).

Words come from the original pipeline's pre-tokenisation (lowercase, ftfy, `text_standardize`, spaCy's rule-based
English split), exactly as `Tokenizer.encode` splits text; `tokenizers`' BPE trainer learns merges over them with
`</w>` word ends. The result is a `gpt1.tokenizer.Tokenizer` that saves and loads like GPT-1's.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

from .tokenizer import EOW, UNK, Tokenizer


def pretokenize(texts: Iterable[str]) -> list[list[str]]:
    """The words `Tokenizer.encode` would run BPE on, per text (spaCy's whitespace tokens dropped)."""
    probe = Tokenizer({UNK: 0}, [])  # only its pre-tokenizer is used
    out = []
    for text in texts:
        words = [tok.text.lower() for doc in probe._docs(text) if doc is not None for tok in doc]
        out.append([w for w in words if w.strip()])
    return out


def train_tokenizer(texts: Sequence[str], vocab_size: int, special_tokens: Sequence[str] = ()) -> Tokenizer:
    """A `Tokenizer` whose BPE (base vocabulary of at most `vocab_size`, `<unk>` included) is learned on `texts`;
    `special_tokens` are appended after it, as GPT-1's `_start_` etc. would be."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import pre_tokenizers, trainers
    from tokenizers.models import BPE

    if vocab_size < 2:
        raise ValueError(f"vocab_size {vocab_size} is too small; use at least a few hundred.")
    words = pretokenize(texts)
    if not any(words):
        raise ValueError("The texts have no words to learn a vocabulary from.")
    rust = RustTokenizer(BPE(unk_token=UNK, end_of_word_suffix=EOW))
    rust.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the words are already split: only undo our joining
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[UNK], end_of_word_suffix=EOW,
                                  show_progress=False)  # fmt: skip
    rust.train_from_iterator((" ".join(w) for w in words), trainer=trainer)
    model = json.loads(rust.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return Tokenizer(dict(model["vocab"]), merges, special_tokens)
