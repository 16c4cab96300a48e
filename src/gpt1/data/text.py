"""Causal-LM fine-tuning data: records -> `template` + end-of-text token -> token ids -> batches for the `Trainer`.

Two batch sources, both restartable exactly (gpt1.data.batching: their state is an epoch and a position; each epoch's
order is a pure function of the seed):
- `DynamicPaddingSource`: each batch is padded only to its own longest example (labels -100 and attention mask 0 on
  the padding). With `bucket=True` examples of similar length are batched together (shuffled within pools of
  `pool_batches` batches, sorted by length inside a pool, then the batches shuffled), which removes most padding.
- `PackedSource`: examples are packed whole into full blocks of `block_size` tokens; each row carries `segment_ids`
  (1, 2, ... per example, 0 on the tail padding) and `position_ids` restarting at 0 for every example, so a loss
  that honours them (`gpt1.recipes.finetune_lm.packed_lm_loss`) keeps attention inside each example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gpt1.data.batching import PlannedBatches, batch_slices
from gpt1.data.readers import load_records, require_column

EOS_TOKEN = "<|endoftext|>"  # the same string the pre-training corpus ends documents with (data/corpus.py)
DEFAULT_TEMPLATE = "JOKE: {text}"


def read_texts(source, text_column: str | None = None, split: str = "train") -> list[str]:
    """The strings of column `text_column` (default "text") of a CSV/TSV/JSONL/text file, folder or `datasets` name."""
    ds = load_records(source, split=split)
    column = text_column or "text"
    require_column(ds, column, source if isinstance(source, (str, Path)) else ", ".join(map(str, source)))
    # Empty cells (None / blank) carry nothing to learn; drop them rather than train on a bare template.
    return [t for t in ds[column] if isinstance(t, str) and t.strip()]


def format_text(text: str, template: str = DEFAULT_TEMPLATE) -> str:
    """`template` with `{text}` replaced by `text` (a plain replace, so braces in the joke are harmless)."""
    return template.replace("{text}", text.strip())


def check_template(template: str) -> None:
    """Refuse a template without the `{text}` slot: every example would be the same string."""
    if "{text}" not in template:
        raise ValueError(f"--template {template!r} has no {{text}} slot; use e.g. {DEFAULT_TEMPLATE!r}.")


def add_eos_token(tokenizer, eos: str = EOS_TOKEN) -> int:
    """Add `eos` to the tokenizer as a special token (a no-op if present) and return its id. The caller grows the
    model's embeddings to the tokenizer's length (`GPT.resize_token_embeddings`) and records the id in its config."""
    if not eos:
        raise ValueError("--eos must be a non-empty string such as '<|endoftext|>'.")
    (eos_id,) = tokenizer.add_special_tokens([eos])
    return eos_id


def tokenize_examples(
    tokenizer,
    texts: Sequence[str],
    eos_id: int,
    template: str = DEFAULT_TEMPLATE,
    max_length: int | None = None,
    num_proc: int = 1,
    progress: bool = False,
) -> tuple[list[list[int]], int]:
    """Encode each `template`-formatted text once and append `eos_id`; returns (examples, how many were truncated).

    Examples longer than `max_length` (the model's context) keep their first `max_length` tokens (and so lose the eos).
    """
    check_template(template)
    encoded = tokenizer.encode_batch([format_text(t, template) for t in texts], num_proc=num_proc, progress=progress)
    out, truncated = [], 0
    for ids in encoded:
        ids = list(ids) + [eos_id]
        if max_length is not None and len(ids) > max_length:
            ids = ids[:max_length]
            truncated += 1
        out.append(ids)
    return out, truncated


def split_examples(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded (train, val) split; `val_fraction` in [0, 1), at least one val example when it is > 0."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val-fraction {val_fraction} is invalid; use a number in [0, 1).")
    if val_fraction == 0:
        return list(examples), []
    if len(examples) < 2:
        raise ValueError(f"{len(examples)} example(s) cannot be split into train and validation; give more data.")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = min(len(examples) - 1, max(1, round(val_fraction * len(examples))))
    val = [examples[i] for i in sorted(order[:n_val])]
    train = [examples[i] for i in sorted(order[n_val:])]
    return train, val


def pad_batch(examples: Sequence[Sequence[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad `examples` to the longest of them: input_ids, attention_mask (0 on padding), labels (-100 on padding)."""
    T = max(len(e) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.as_tensor(e, dtype=torch.long)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def eval_batches(examples: Sequence[Sequence[int]], batch_size: int, pad_id: int = 0):
    """Batches over all `examples` once, sorted by length so each pads little (order does not change a mean loss)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for s in range(0, len(order), batch_size):
        yield pad_batch([examples[i] for i in order[s : s + batch_size]], pad_id)


def check_examples(examples: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """The training examples as lists, refusing an empty set or a batch size below 1."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} is invalid; use 1 or more.")
    if not examples:
        raise ValueError("No training examples: the data is empty after the validation split.")
    return [list(e) for e in examples]


class DynamicPaddingSource(PlannedBatches):
    """Shuffled batches of `batch_size` examples, each padded only to its own longest example; endless, epoch by epoch."""

    def __init__(
        self,
        examples: Sequence[Sequence[int]],
        batch_size: int,
        seed: int = 1234,
        bucket: bool = True,
        pool_batches: int = 50,
        pad_id: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.examples = check_examples(examples, batch_size)
        self.batch_size, self.seed, self.bucket, self.pad_id = batch_size, seed, bucket, pad_id
        self.pool_batches = max(1, pool_batches)
        self.drop_last = drop_last and len(self.examples) >= batch_size
        n = len(self.examples)
        self.steps_per_epoch = n // batch_size if self.drop_last else math.ceil(n / batch_size)

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """The batches (lists of example indices) of `epoch`: a pure function of (seed, epoch)."""
        rng = self.epoch_rng(epoch)
        order = rng.permutation(len(self.examples)).tolist()
        bs = self.batch_size
        if self.bucket:
            pool = bs * self.pool_batches
            lengths = [len(e) for e in self.examples]
            order = [
                i for s in range(0, len(order), pool) for i in sorted(order[s : s + pool], key=lengths.__getitem__)
            ]
        batches = batch_slices(order, bs, self.drop_last)
        if self.bucket:  # otherwise every epoch would run from short to long within each pool
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        return pad_batch([self.examples[i] for i in batch], self.pad_id)


def pack_examples(examples: Sequence[Sequence[int]], block_size: int) -> list[list[int]]:
    """Greedy first-fit-in-order packing: consecutive examples share a block while they fit whole (index lists)."""
    blocks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, e in enumerate(examples):
        n = len(e)
        if n > block_size:
            raise ValueError(f"example {i} has {n} tokens, more than the block of {block_size}; truncate it first.")
        if used + n > block_size:
            blocks.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        blocks.append(current)
    return blocks


def pack_rows(rows: Sequence[Sequence[Sequence[int]]], block_size: int, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """One block per row of whole examples: input_ids, segment_ids (k for the k-th example, 0 on padding),
    position_ids (restarting at 0 per example), attention_mask (0 on padding) and labels.

    Labels are -100 on padding and on each example's first token: that token is not predicted from the previous
    example, exactly as when each example is its own row.
    """
    B = len(rows)
    ids = torch.full((B, block_size), pad_id, dtype=torch.long)
    seg = torch.zeros((B, block_size), dtype=torch.long)
    pos = torch.zeros((B, block_size), dtype=torch.long)
    labels = torch.full((B, block_size), -100, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for k, e in enumerate(row, start=1):
            n = len(e)
            t = torch.as_tensor(e, dtype=torch.long)
            ids[r, at : at + n] = t
            seg[r, at : at + n] = k
            pos[r, at : at + n] = torch.arange(n)
            labels[r, at + 1 : at + n] = t[1:]  # the first token of an example has no context: not a target
            at += n
    return {
        "input_ids": ids,
        "attention_mask": (seg > 0).long(),
        "labels": labels,
        "segment_ids": seg,
        "position_ids": pos,
    }


class PackedSource(PlannedBatches):
    """Rows of `block_size` tokens, each filled with whole shuffled examples (see `pack_rows`); endless, by epoch."""

    def __init__(
        self, examples: Sequence[Sequence[int]], batch_size: int, block_size: int, seed: int = 1234, pad_id: int = 0
    ) -> None:
        self.examples = check_examples(examples, batch_size)
        self.batch_size, self.block_size, self.seed, self.pad_id = batch_size, block_size, seed, pad_id
        self.steps_per_epoch = len(self.plan(0))

    def epoch_plan(self, epoch: int) -> list[list[list[int]]]:
        """Batches (lists of rows, each a list of example indices) of `epoch`: a pure function of (seed, epoch)."""
        order = self.epoch_rng(epoch).permutation(len(self.examples)).tolist()
        blocks = [[order[j] for j in b] for b in pack_examples([self.examples[i] for i in order], self.block_size)]
        return batch_slices(blocks, self.batch_size)

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return pack_rows([[self.examples[i] for i in row] for row in rows], self.block_size, self.pad_id)
