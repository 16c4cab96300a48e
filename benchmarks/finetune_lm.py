"""Jokes fine-tuning, ours vs the tutorial's way, on ../shared/data/short-jokes/shortjokes_train.csv:

1. time to tokenize the jokes as `JOKE: <joke>`: our `encode_batch` vs HF 4.x's OpenAIGPTTokenizer called joke by joke;
2. training throughput, same model and steps: batches padded to their own longest example (bucketed, ours) vs
   every batch padded to the dataset's longest joke (the tutorial's way). "useful tok/s" counts real tokens only.

Usage: python benchmarks/finetune_lm.py [--quick] [--jokes N] [--preset mini] [--steps 20] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import copy
import csv
import tempfile
import time
from pathlib import Path

import torch

from gpt1 import GPT, GPT1Config
from gpt1.data.text import DynamicPaddingSource, add_eos_token, format_text, tokenize_examples
from gpt1.runtime import resolve_precision
from gpt1.tokenizer.bpe import Tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class FixedPaddingSource(DynamicPaddingSource):
    """Shuffled batches all padded to the longest example of the whole dataset (the tutorial's way; for comparison)."""

    def __init__(self, examples, batch_size: int, seed: int = 1234, pad_id: int = 0) -> None:
        super().__init__(examples, batch_size, seed=seed, bucket=False, pad_id=pad_id)
        self.max_len = max(len(e) for e in self.examples)

    def collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        batch = super().collate(batch)
        extra = self.max_len - batch["input_ids"].shape[1]
        if not extra:
            return batch
        pad = {"input_ids": self.pad_id, "attention_mask": 0, "labels": -100}
        return {k: torch.nn.functional.pad(batch[k], (0, extra), value=v) for k, v in pad.items()}


def tokenize_times(jokes: list[str], vocab: Path, num_proc: int) -> list[tuple[str, float, float]]:
    """Seconds for ours (fresh caches) and for HF's slow tokenizer, both over the same `JOKE: ...` strings."""
    from transformers import OpenAIGPTTokenizer

    texts = [format_text(j) for j in jokes]
    ours = Tokenizer.from_pretrained(vocab)
    t0 = time.perf_counter()
    ours.encode_batch(texts, num_proc=num_proc, progress=True)
    t_ours = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        Tokenizer.from_pretrained(vocab).save_pretrained(d)
        hf = OpenAIGPTTokenizer.from_pretrained(d)
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    for t in tqdm(texts, desc="HF slow, joke by joke", unit="text"):
        hf.encode(t)
    t_hf = time.perf_counter() - t0
    return [("tokenize", t_ours, t_hf)]


def train_throughput(examples, preset: str, steps: int, batch_size: int) -> dict[str, dict[str, float]]:
    """Useful (non-padding) tokens/s and padded tokens/s of fwd+bwd+AdamW steps, the same model for both sources."""
    torch.manual_seed(0)
    vocab = max(max(e) for e in examples) + 1
    base = GPT(GPT1Config.from_preset(preset, vocab_size=vocab))
    dtype = resolve_precision("auto", torch.device("cpu"))
    out = {}
    for name, source in (
        ("dynamic (ours)", DynamicPaddingSource(examples, batch_size, seed=1)),
        ("fixed to longest", FixedPaddingSource(examples, batch_size, seed=1)),
    ):
        model = copy.deepcopy(base).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        useful = padded = 0
        for i in range(steps + 2):  # the first two steps warm up allocators and kernels
            if i == 2:
                t0 = time.perf_counter()
                useful = padded = 0
            b = source.next_batch()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = model(**b).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            useful += int(b["attention_mask"].sum())
            padded += b["input_ids"].numel()
        s = time.perf_counter() - t0
        out[name] = {"s": s, "useful_tok_s": useful / s, "padded_tok_s": padded / s, "pad_share": 1 - useful / padded}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3000 jokes, 8 steps")
    p.add_argument("--jokes", type=int, help="tokenize only the first N jokes (default: all)")
    p.add_argument("--preset", default="mini", help="model preset for the training part (default mini)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per padding mode (default 20)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-proc", type=int, default=1, help="our tokenizer's worker processes (default 1)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--data", type=Path, default=SHARED)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n = a.jokes or (3000 if a.quick else None)
    steps = 8 if a.quick else a.steps
    with open(a.data / "short-jokes" / "shortjokes_train.csv", encoding="utf-8", newline="") as f:
        jokes = [row["Joke"] for row in csv.DictReader(f)][:n]
    vocab = a.data / "gpt1-vocab"
    print(
        f"{len(jokes)} jokes; preset {a.preset}; batch {a.batch_size}; {steps} timed steps; "
        f"{torch.get_num_threads()} torch threads"
    )
    ((_, t_ours, t_hf),) = tokenize_times(jokes, vocab, a.num_proc)
    tok = Tokenizer.from_pretrained(vocab)
    eos = add_eos_token(tok)
    examples, _ = tokenize_examples(tok, jokes, eos)
    lengths = sorted(map(len, examples))
    print(f"example lengths: median {lengths[len(lengths) // 2]}, longest {lengths[-1]} tokens")
    tr = train_throughput(examples, a.preset, steps, a.batch_size)
    dyn, fix = tr["dynamic (ours)"], tr["fixed to longest"]
    print()
    print("| measure | ours | tutorial's way | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| tokenize {len(jokes)} jokes (s) | {t_ours:.1f} | {t_hf:.1f} (HF slow, joke by joke) | {t_hf / t_ours:.1f}x faster |"
    )
    print(
        f"| train: useful tokens/s | {dyn['useful_tok_s']:.0f} | {fix['useful_tok_s']:.0f} (fixed padding) | "
        f"{dyn['useful_tok_s'] / fix['useful_tok_s']:.1f}x |"
    )
    print(f"| train: s per {steps} steps | {dyn['s']:.1f} | {fix['s']:.1f} | {fix['s'] / dyn['s']:.1f}x faster |")
    print(f"| train: share of padding | {dyn['pad_share']:.1%} | {fix['pad_share']:.1%} | |")


if __name__ == "__main__":
    main()
