"""Learn a GPT-1-style BPE on a corpus, for when GPT-1's own vocabulary files are not at hand (the offline demo,
`gpt1 prepare --vocab-size`), or when a small CPU model should not spend its compute on a 40k-row softmax.

Words come from the original pipeline's pre-tokenisation (gpt1.tokenizer.pretokenize: lowercase, ftfy,
`text_standardize`, spaCy's rule-based English split), exactly as `Tokenizer.encode` splits text. Merges are learned here rather than with `tokenizers`'
trainer because that one breaks ties between equally frequent pairs in hash-map order, which changes from process
to process: the same texts gave a different vocabulary on every run. Here every choice is ordered (count, then the
pair's strings), so the same texts and size always give the same files, byte for byte. The line-break symbol
`\\n</w>` is always in the vocabulary, as it is in GPT-1's (id 40477), so hard-wrapped text never becomes `<unk>`.
"""

from __future__ import annotations

import heapq
import multiprocessing
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from gpt1.tokenizer.bpe import EOW, UNK, Tokenizer
from gpt1.tokenizer.pretokenize import words

NEWLINE = "\n" + EOW  # what a line break encodes to (spaCy's whitespace token through OpenAI's `bpe`)
MIN_VOCAB = 16


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} is too small; use at least a few hundred (e.g. 8000).")


def count_words(texts: Iterable[str], num_proc: int = 1, progress: bool = False) -> Counter:
    """How often each pre-tokenized word occurs in `texts` (in `num_proc` processes when > 1)."""
    from tqdm.auto import tqdm

    texts = list(texts)
    counts: Counter = Counter()
    with tqdm(total=len(texts), disable=not progress, unit="text", desc="counting words") as bar:
        if num_proc <= 1 or len(texts) < 2 * num_proc:
            for text in texts:
                counts.update(words(text))
                bar.update()
            return counts
        with multiprocessing.Pool(num_proc) as pool:
            for part in pool.imap_unordered(_count_words, texts, chunksize=1):
                counts.update(part)
                bar.update()
    return counts


def _count_words(text: str) -> Counter:
    return Counter(words(text))


def learn_bpe(word_counts: dict[str, int], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a BPE with `</w>` word ends and at most `vocab_size` entries (`<unk>` and `\\n</w>` included).

    The base symbols are every character (and every word-final character + `</w>`) of the words; if there are more
    than half of `vocab_size`, the rarest are left out and the words holding them are not learned from (they encode
    to `<unk>` pieces, as unknown characters do with GPT-1's vocabulary). Ties are broken by the pair's strings.
    """
    check_vocab_size(vocab_size)
    words = sorted(w for w, c in word_counts.items() if c > 0 and w)
    if not words:
        raise ValueError("The texts have no words to learn a vocabulary from.")
    symbols: Counter = Counter()
    for w in words:
        c = word_counts[w]
        for ch in w[:-1]:
            symbols[ch] += c
        symbols[w[-1] + EOW] += c
    symbols.pop(NEWLINE, None)
    base = sorted(symbols, key=lambda s: (-symbols[s], s))[: max(1, vocab_size // 2 - 2)]
    vocab = {UNK: 0, NEWLINE: 1}
    for s in base:
        vocab[s] = len(vocab)
    kept = set(base)
    seqs = [list(w[:-1]) + [w[-1] + EOW] for w in words]
    counts = [word_counts[w] for w in words]
    usable = [i for i, s in enumerate(seqs) if all(p in kept for p in s)]

    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i in usable:
        s, c = seqs[i], counts[i]
        for pair in zip(s, s[1:]):
            pair_counts[pair] += c
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or -neg <= 0:
            continue  # a stale entry: this pair's count changed after it was pushed
        a, b = pair
        merged = a + b
        merges.append(pair)
        vocab.setdefault(merged, len(vocab))
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair)):
            old, c = seqs[i], counts[i]
            new, j = [], 0
            while j < len(old):
                if j < len(old) - 1 and old[j] == a and old[j + 1] == b:
                    new.append(merged)
                    j += 2
                else:
                    new.append(old[j])
                    j += 1
            if len(new) == len(old):
                continue
            for p in zip(old, old[1:]):
                pair_counts[p] -= c
                touched.add(p)
            for p in zip(new, new[1:]):
                pair_counts[p] += c
                where[p].add(i)
                touched.add(p)
            seqs[i] = new
        pair_counts.pop(pair, None)
        for p in sorted(touched):
            c = pair_counts.get(p, 0)
            if c > 0 and p != pair:
                heapq.heappush(heap, (-c, p))
            elif c <= 0:
                pair_counts.pop(p, None)
    return vocab, merges


def train_tokenizer(
    texts: Sequence[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    *,
    num_proc: int = 1,
    progress: bool = False,
) -> Tokenizer:
    """A `Tokenizer` whose BPE (at most `vocab_size` entries, `<unk>` and `\\n</w>` included) is learned on `texts`;
    `special_tokens` are appended after it, as GPT-1's `_start_` etc. would be. Deterministic."""
    check_vocab_size(vocab_size)  # before the words are counted
    vocab, merges = learn_bpe(count_words(texts, num_proc=num_proc, progress=progress), vocab_size)
    return Tokenizer(vocab, merges, special_tokens)
