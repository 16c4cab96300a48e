"""Causal-LM fine-tuning data: records -> `template` + end-of-text token -> token ids -> batches for the `Trainer`.

Two batch sources, both restartable exactly (their state is an epoch and a position; each epoch's order is a pure
function of the seed):
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

EOS_TOKEN = "<|endoftext|>"  # the same string the pre-training corpus ends documents with (data/corpus.py)
DEFAULT_TEMPLATE = "JOKE: {text}"


def read_texts(source, text_column: str | None = None, split: str = "train") -> list[str]:
    """The strings of column `text_column` (default "text") of a CSV/TSV/JSONL/text file, folder or `datasets` name."""
    from gpt1.data.readers import load_records, require_column

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


def add_eos_token(tokenizer, model=None, eos: str = EOS_TOKEN) -> int:
    """Add `eos` as a real vocabulary entry (a no-op if present), grow `model`'s embeddings to fit and record the id.

    New embedding rows are N(0, initializer_range); the id is stored in `model.config.extra["eos_token_id"]`, which
    `gpt1 generate` reads to stop at the end of text.
    """
    if not eos:
        raise ValueError("--eos must be a non-empty string such as '<|endoftext|>'.")
    (eos_id,) = tokenizer.add_special_tokens([eos])
    if model is not None:
        if model.config.vocab_size < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.extra["eos_token_id"] = eos_id
        model.config.extra["eos_token"] = eos
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


class EpochPlanSource:
    """A restartable `BatchSource` walking a per-epoch plan of batches; subclasses give `epoch_batches` and `collate`.

    The plan of an epoch is a pure function of (seed, epoch), so the state is just (epoch, position).
    """

    epoch: int = 0
    position: int = 0
    _plan: list | None = None

    def _set_examples(self, examples: Sequence[Sequence[int]], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"--batch-size {batch_size} is invalid; use 1 or more.")
        if not examples:
            raise ValueError("No training examples: the data is empty after the validation split.")
        self.examples = [list(e) for e in examples]

    def epoch_batches(self, epoch: int) -> list:
        raise NotImplementedError

    def collate(self, item) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self._plan is None:
            self._plan = self.epoch_batches(self.epoch)
        if self.position >= len(self._plan):
            self.epoch, self.position = self.epoch + 1, 0
            self._plan = self.epoch_batches(self.epoch)
        item = self._plan[self.position]
        self.position += 1
        return self.collate(item)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._plan = None


class DynamicPaddingSource(EpochPlanSource):
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
        self._set_examples(examples, batch_size)
        self.batch_size, self.seed, self.bucket, self.pad_id = batch_size, seed, bucket, pad_id
        self.pool_batches = max(1, pool_batches)
        self.drop_last = drop_last and len(self.examples) >= batch_size
        n = len(self.examples)
        self.steps_per_epoch = n // batch_size if self.drop_last else math.ceil(n / batch_size)
        self.epoch, self.position = 0, 0
        self._plan: list[list[int]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches (lists of example indices) of `epoch`: a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples)).tolist()
        bs = self.batch_size
        if self.bucket:
            pool = bs * self.pool_batches
            lengths = [len(e) for e in self.examples]
            order = [
                i for s in range(0, len(order), pool) for i in sorted(order[s : s + pool], key=lengths.__getitem__)
            ]
        batches = [order[s : s + bs] for s in range(0, len(order), bs)]
        if self.drop_last and len(batches[-1]) < bs:
            batches.pop()
        if self.bucket:  # otherwise every epoch would run from short to long within each pool
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        return pad_batch([self.examples[i] for i in batch], self.pad_id)


class FixedPaddingSource(DynamicPaddingSource):
    """Shuffled batches all padded to the longest example of the whole dataset (the tutorial's way; for comparison)."""

    def __init__(self, examples, batch_size: int, seed: int = 1234, pad_id: int = 0) -> None:
        super().__init__(examples, batch_size, seed=seed, bucket=False, pad_id=pad_id)
        self.max_len = max(len(e) for e in self.examples)

    def collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        batch = super().collate(batch)
        extra = self.max_len - batch["input_ids"].shape[1]
        if extra:
            pad = lambda t, v: torch.nn.functional.pad(t, (0, extra), value=v)  # noqa: E731
            batch = {
                "input_ids": pad(batch["input_ids"], self.pad_id),
                "attention_mask": pad(batch["attention_mask"], 0),
                "labels": pad(batch["labels"], -100),
            }
        return batch


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


class PackedSource(EpochPlanSource):
    """Rows of `block_size` tokens, each filled with whole shuffled examples (see `pack_rows`); endless, by epoch."""

    def __init__(
        self, examples: Sequence[Sequence[int]], batch_size: int, block_size: int, seed: int = 1234, pad_id: int = 0
    ) -> None:
        self._set_examples(examples, batch_size)
        self.batch_size, self.block_size, self.seed, self.pad_id = batch_size, block_size, seed, pad_id
        self.epoch, self.position = 0, 0
        self._plan: list[list[list[int]]] | None = None
        self.steps_per_epoch = len(self.epoch_batches(0))

    def epoch_batches(self, epoch: int) -> list[list[list[int]]]:
        """Batches (lists of rows, each a list of example indices) of `epoch`: a pure function of (seed, epoch)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples)).tolist()
        blocks = [[order[j] for j in b] for b in pack_examples([self.examples[i] for i in order], self.block_size)]
        return [blocks[s : s + self.batch_size] for s in range(0, len(blocks), self.batch_size)]

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return pack_rows([[self.examples[i] for i in row] for row in rows], self.block_size, self.pad_id)
