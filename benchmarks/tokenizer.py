"""Tokenizer throughput: gpt1.Tokenizer vs HF's slow OpenAIGPTTokenizer (and the fast one) on the short-jokes file.

Usage: python benchmarks/tokenizer.py [--sample N] [--data DIR]
Every tokenizer starts fresh (empty caches) and encodes the same jokes one at a time, once. HF slow runs on the
first N jokes only (it is slow); ours runs on those and on the whole file. Ratios are against HF slow.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from gpt1.tokenizer.bpe import Tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def measure(name: str, encode, texts: list[str]) -> dict:
    """Encode each text once and return the row of the table."""
    start = time.perf_counter()
    n_tokens = sum(len(encode(t)) for t in texts)
    seconds = time.perf_counter() - start
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    return {
        "name": name,
        "texts": len(texts),
        "mb": mb,
        "s": seconds,
        "mb_s": mb / seconds,
        "tok_s": n_tokens / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=8000, help="jokes for the slow reference (default 8000)")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    args = parser.parse_args()
    vocab = args.data / "gpt1-vocab"
    with open(args.data / "short-jokes" / "shortjokes_train.csv", encoding="utf-8", newline="") as f:
        jokes = [row["Joke"] for row in csv.DictReader(f)]
    sample = jokes[: args.sample]

    from transformers import OpenAIGPTTokenizer, OpenAIGPTTokenizerFast

    files = {"vocab_file": str(vocab / "encoder_bpe_40000.json"), "merges_file": str(vocab / "vocab_40000.bpe")}
    hf_slow = OpenAIGPTTokenizer(**files)
    hf_fast = OpenAIGPTTokenizerFast(**files)
    ours_sample = Tokenizer.from_pretrained(vocab)
    ours_full = Tokenizer.from_pretrained(vocab)
    for tok in (ours_sample, ours_full):
        tok.encode("warm up spaCy's import and construction")
        tok._cache.clear()  # start the measured runs with an empty token cache

    rows = [
        measure("HF slow (reference)", hf_slow.encode, sample),
        measure("gpt1 Tokenizer", ours_sample.encode, sample),
        measure("HF fast (BERT pre-split, different ids)", hf_fast.encode, sample),
        measure("gpt1 Tokenizer, whole file", ours_full.encode, jokes),
    ]
    same = sum(hf_slow.encode(t) == ours_sample.encode(t) for t in sample)
    reference = rows[0]["mb_s"]
    print(f"{'tokenizer':42} {'texts':>7} {'MB':>6} {'s':>7} {'MB/s':>7} {'tokens/s':>10} {'x HF slow':>9}")
    for r in rows:
        print(
            f"{r['name']:42} {r['texts']:7d} {r['mb']:6.2f} {r['s']:7.2f} {r['mb_s']:7.3f} {r['tok_s']:10.0f} "
            f"{r['mb_s'] / reference:9.1f}"
        )
    print(f"identical ids to HF slow on {same}/{len(sample)} sampled jokes")


if __name__ == "__main__":
    main()
