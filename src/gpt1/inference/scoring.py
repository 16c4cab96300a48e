"""Scoring token sequences: the log-probability the language model gives each token after the ones before it.

One function serves every caller that scores text (zero-shot evaluation, the lm-eval adapter, the server's
`logprobs`/`echo`): sequences are batched by length and right-padded (attention is causal, so padding after a token
changes nothing before it), and log-probabilities are those of the full-vocabulary softmax in float32 at temperature 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gpt1.inference.decoding import left_pad, prefill
from gpt1.runtime import autocast

__all__ = [
    "TokenScores",
    "check_sequences",
    "next_token_logprobs",
    "score_tokens",
    "score_with_next",
    "scores_from_logits",
]


@dataclass
class TokenScores:
    """Per-token scores of one sequence; position 0 has no context (GPT-1 has no start token), so it is not scored."""

    ids: list[int]  # the scored sequence
    logprobs: list[float | None]  # logprobs[i] = log p(ids[i] | ids[:i]); None at i = 0
    greedy: list[bool]  # ids[i] is the most likely token at position i (False at i = 0)
    top: list[list[tuple[int, float]]] | None  # per position i >= 1 the top_k (id, logprob), best first; [] at i = 0

    @property
    def total(self) -> float:
        """Sum of the scored tokens' log-probabilities (positions 1..)."""
        return float(sum(lp for lp in self.logprobs[1:]))


def check_sequences(sequences: Sequence[Sequence[int]], n_positions: int, vocab_size: int | None = None) -> None:
    """Refuse an empty sequence, one longer than the context, or (given `vocab_size`) an id outside the vocabulary."""
    for k, seq in enumerate(sequences):
        if len(seq) == 0:
            raise ValueError(f"sequence {k} to score is empty: give at least one token.")
        if len(seq) > n_positions:
            raise ValueError(
                f"sequence {k} to score is {len(seq)} tokens, longer than the model's context of {n_positions} "
                f"positions; shorten it (or score it in windows)."
            )
        if vocab_size is not None:
            bad = next((t for t in seq if not 0 <= int(t) < vocab_size), None)
            if bad is not None:
                raise ValueError(
                    f"sequence {k} to score has token id {bad}, outside the vocabulary 0..{vocab_size - 1}."
                )


def scores_from_logits(logits: torch.Tensor, ids: Sequence[int], top_k: int = 0) -> TokenScores:
    """TokenScores of `ids` from `logits` (len(ids) - 1 or more rows, row i predicting ids[i + 1])."""
    ids = [int(t) for t in ids]
    n = len(ids) - 1
    if n == 0:
        return TokenScores(ids, [None], [False], [[]] if top_k else None)
    logp = F.log_softmax(logits[:n].float(), dim=-1)
    target = torch.tensor(ids[1:], device=logp.device)
    chosen = logp.gather(-1, target[:, None])[:, 0]
    top = None
    if top_k:
        values, indices = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
        top = [[]] + [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
        best = values[:, 0]
    else:
        best = logp.max(-1).values
    greedy = chosen >= best  # a tie with the best counts as greedy
    return TokenScores(ids, [None, *chosen.tolist()], [False, *greedy.tolist()], top)


@torch.no_grad()
def score_tokens(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    top_k: int = 0,
    batch_size: int = 16,
    precision: str = "auto",
    progress: bool = False,
    desc: str = "scoring",
) -> list[TokenScores]:
    """Score every token of each sequence after the tokens before it, in batches of similar length; input order kept.

    `top_k` > 0 also returns each position's `top_k` most likely tokens. `precision` as the Trainer's ("auto": bf16
    autocast where the hardware has it; "fp32" for exact scores); the softmax itself is always float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if top_k < 0:
        raise ValueError(f"top_k must be 0 or more; got {top_k}.")
    check_sequences(sequences, model.config.n_positions)
    model.eval()
    seqs = [[int(t) for t in s] for s in sequences]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]), reverse=True)  # longest first: memory peaks early
    out: list[TokenScores | None] = [None] * len(seqs)
    bar = tqdm(total=len(seqs), desc=desc, disable=not progress, dynamic_ncols=True)
    with autocast(model.device, precision, model.dtype):
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            logits = _padded_logits(model, [seqs[i] for i in idx])
            for r, i in enumerate(idx):  # one row's float32 softmax at a time: no second (B, T, vocab) copy
                out[i] = scores_from_logits(logits[r], seqs[i], top_k)
            bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


@torch.no_grad()
def score_with_next(
    model, sequences: Sequence[Sequence[int]], top_k: int = 0, precision: str = "fp32"
) -> tuple[list[TokenScores], torch.Tensor]:
    """Scores of each sequence and the logits (B, vocab) after its last token, from one forward of them all: what a
    server needs to score a prompt and choose the token that follows it at once."""
    check_sequences(sequences, model.config.n_positions)
    seqs = [[int(t) for t in s] for s in sequences]
    with autocast(model.device, precision, model.dtype):
        logits = _padded_logits(model, seqs)
        scores = [scores_from_logits(logits[r], s, top_k) for r, s in enumerate(seqs)]
    last = torch.tensor([len(s) - 1 for s in seqs], device=logits.device)
    return scores, logits[torch.arange(len(seqs), device=logits.device), last]


@torch.no_grad()
def next_token_logprobs(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    precision: str = "auto",
    progress: bool = False,
    desc: str = "next-token",
) -> torch.Tensor:
    """(len(sequences), vocab) float32 log-probabilities of the token after each sequence, in input order: the
    decoder's prefill of left-padded, length-sorted batches, which computes the logits of the last position only
    (what one-token answers need: every choice after one context is read from one row)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    check_sequences(sequences, model.config.n_positions)
    model.eval()
    seqs = [[int(t) for t in s] for s in sequences]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]), reverse=True)
    out: torch.Tensor | None = None
    with autocast(model.device, precision, model.dtype):
        for k in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
            idx = order[k : k + batch_size]
            ids, mask = left_pad([seqs[i] for i in idx])
            logits = prefill(model, ids.to(model.device), mask.to(model.device), capacity=ids.shape[1]).logits
            logp = F.log_softmax(logits.float(), dim=-1).cpu()
            if out is None:
                out = torch.empty(len(seqs), logp.shape[-1])
            out[idx] = logp
    return out if out is not None else torch.empty(0, model.config.vocab_size)


def _padded_logits(model, seqs: list[list[int]]) -> torch.Tensor:
    """Logits (B, T, vocab) of `seqs` right-padded to the longest (causal attention: padding changes nothing before)."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
    return model(ids.to(model.device)).logits
