"""Task examples → model inputs: the paper's special tokens and four input transformations (§3.3, Figure 1), the
encoded `TaskData` of a task, and its batches (a resumable `BatchSource` for the Trainer, and evaluation batches).

Every task becomes examples of S token sequences, each `[start] ... [extract]`:
    classification  S = 1   [start] text [extract]
    entailment      S = 1   [start] premise [delim] hypothesis [extract]
    similarity      S = 2   [start] a [delim] b [extract]  and  [start] b [delim] a [extract]
    multiple choice S = K   [start] context [delim] answer_k [extract]   for each of the K answers
Lengths follow OpenAI's finetune-transformer-lm: each of two segments is cut to `n_positions // 2 - 2` tokens (keeping
its start), a single segment to `n_positions - 2`, so a sequence never exceeds the model's context.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gpt1.data.batching import PlannedBatches, batch_slices
from gpt1.data.tasks import TaskSpec

SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")


# ---- special tokens ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpecialIds:
    """The ids of the three special tokens in the tokenizer."""

    start: int
    delimiter: int
    classify: int


def add_special_tokens(tokenizer) -> SpecialIds:
    """Append `_start_`, `_delimiter_`, `_classify_` to the tokenizer (ids 40478-40480 for GPT-1's vocabulary) and
    return their ids; idempotent. `Tokenizer.encode` never emits these ids. The model's embeddings are grown to the
    tokenizer's length by the caller (`GPT.resize_token_embeddings`)."""
    return SpecialIds(*tokenizer.add_special_tokens(list(SPECIAL_TOKENS)))


# ---- the four transformations (on token ids) ---------------------------------------------------------------------
def _two(a: Sequence[int], b: Sequence[int], sp: SpecialIds, n_positions: int) -> list[int]:
    m = n_positions // 2 - 2
    return [sp.start, *a[:m], sp.delimiter, *b[:m], sp.classify]


def classification_ids(text: Sequence[int], sp: SpecialIds, n_positions: int) -> list[int]:
    """`[start] text [extract]`, the text cut to `n_positions - 2` tokens."""
    return [sp.start, *text[: n_positions - 2], sp.classify]


def entailment_ids(premise: Sequence[int], hypothesis: Sequence[int], sp: SpecialIds, n_positions: int) -> list[int]:
    """`[start] premise [delim] hypothesis [extract]`, each cut to `n_positions // 2 - 2` tokens."""
    return _two(premise, hypothesis, sp, n_positions)


def similarity_ids(a: Sequence[int], b: Sequence[int], sp: SpecialIds, n_positions: int) -> list[list[int]]:
    """Both orders, `[start] a [delim] b [extract]` and `[start] b [delim] a [extract]`: similarity has no natural order."""
    return [_two(a, b, sp, n_positions), _two(b, a, sp, n_positions)]


def multiple_choice_ids(
    context: Sequence[int],
    choices: Sequence[Sequence[int]],
    sp: SpecialIds,
    n_positions: int,
    question: Sequence[int] = (),
) -> list[list[int]]:
    """`[start] context question [delim] answer_k [extract]` for each answer, each side cut to `n_positions // 2 - 2`.

    A question (RACE) is kept whole at the end of the context; the document before it is cut to make room, so the
    question is never truncated away.
    """
    m = n_positions // 2 - 2
    q = list(question[:m])
    ctx = [*context[: m - len(q)], *q]
    return [[sp.start, *ctx, sp.delimiter, *c[:m], sp.classify] for c in choices]


# ---- encoded data and batching -----------------------------------------------------------------------------------
@dataclass
class TaskData:
    """Encoded examples: `sequences[i]` holds example i's S token lists; `targets[i]` its label (int or float)."""

    spec: TaskSpec
    sequences: list[list[list[int]]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)


def encode_examples(
    examples: Sequence[dict],
    spec: TaskSpec,
    tokenizer,
    sp: SpecialIds,
    n_positions: int,
    num_proc: int = 1,
    progress: bool = False,
) -> TaskData:
    """Tokenize every text field once (repeated premises and contexts are encoded once) and apply the transformation."""
    if not examples:
        raise ValueError(f"Task {spec.name!r}: no examples to encode.")
    fields = {
        "classification": ("text",),
        "entailment": ("premise", "hypothesis"),
        "similarity": ("a", "b"),
        "multiple_choice": ("context", "question"),
    }[spec.kind]
    texts: dict[str, int] = {}
    for ex in examples:
        for f in fields:
            texts.setdefault(ex.get(f) or "", len(texts))
        for c in ex.get("choices", ()):
            texts.setdefault(c, len(texts))
    ids = tokenizer.encode_batch(list(texts), num_proc=num_proc, progress=progress)
    tok = {t: ids[i] for t, i in texts.items()}
    seqs = []
    for ex in examples:
        if spec.kind == "classification":
            seqs.append([classification_ids(tok[ex["text"]], sp, n_positions)])
        elif spec.kind == "entailment":
            seqs.append([entailment_ids(tok[ex["premise"]], tok[ex["hypothesis"]], sp, n_positions)])
        elif spec.kind == "similarity":
            seqs.append(similarity_ids(tok[ex["a"]], tok[ex["b"]], sp, n_positions))
        else:
            seqs.append(
                multiple_choice_ids(
                    tok[ex["context"]], [tok[c] for c in ex["choices"]], sp, n_positions, tok[ex.get("question") or ""]
                )
            )
    n_choices = {len(s) for s in seqs}
    if len(n_choices) > 1:
        raise ValueError(
            f"Task {spec.name!r}: examples have different numbers of choices {sorted(n_choices)}; "
            "multiple choice needs the same number for every example."
        )
    labels = [ex.get("label") for ex in examples]
    dtype = np.float32 if spec.regression else np.int64
    targets = np.asarray([(-1 if v is None else v) for v in labels], dtype=dtype)
    return TaskData(spec, seqs, targets)


def collate(items: Sequence[tuple[list[list[int]], Any]], regression: bool = False) -> dict[str, torch.Tensor]:
    """Right-pad a list of (sequences, target) into tensors: input_ids and attention_mask (B, S, T), extract_positions
    (B, S) (the index of each `[extract]` token), targets (B,). Padding id 0 is never attended to by real tokens:
    the attention is causal and the padding comes after them."""
    B, S = len(items), len(items[0][0])
    T = max(len(s) for seqs, _ in items for s in seqs)
    input_ids = torch.zeros(B, S, T, dtype=torch.long)
    mask = torch.zeros(B, S, T, dtype=torch.long)
    extract = torch.zeros(B, S, dtype=torch.long)
    for i, (seqs, _) in enumerate(items):
        for j, s in enumerate(seqs):
            input_ids[i, j, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, j, : len(s)] = 1
            extract[i, j] = len(s) - 1
    targets = torch.tensor([t for _, t in items], dtype=torch.float32 if regression else torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "extract_positions": extract, "targets": targets}


class TaskBatchSource(PlannedBatches):
    """Shuffled epochs of a `TaskData` in batches of `batch_size` examples (the last one may be short); each epoch's
    order comes from `(seed, epoch)` alone, so `state_dict()` restores the stream exactly."""

    def __init__(self, data: TaskData, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if len(data) == 0:
            raise ValueError("The training data is empty.")
        self.data, self.batch_size, self.seed, self.shuffle = data, batch_size, seed, shuffle
        self.steps_per_epoch = math.ceil(len(data) / batch_size)

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        n = len(self.data)
        order = self.epoch_rng(epoch).permutation(n) if self.shuffle else np.arange(n)
        return batch_slices(order, self.batch_size)

    def collate(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
        d = self.data
        return collate([(d.sequences[i], d.targets[i].item()) for i in batch], d.spec.regression)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seed": self.seed, "n": len(self.data)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n", len(self.data)) != len(self.data):
            raise ValueError(
                f"The checkpoint's data had {state['n']} examples, this run's has {len(self.data)}; "
                "resume with the same data."
            )
        self.seed = int(state["seed"])
        position = state["position"] if "position" in state else state["index"]  # "index": older checkpoints
        super().load_state_dict({"epoch": state["epoch"], "position": position})


def eval_batches(data: TaskData, batch_size: int) -> Iterable[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(example indices, batch) in order of length, so each batch pads little; callers scatter results back by index."""
    order = np.argsort([max(len(s) for s in seqs) for seqs in data.sequences], kind="stable")
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        yield idx, collate([(data.sequences[i], data.targets[i].item()) for i in idx], data.spec.regression)
