"""Choosing the next token: the per-row parameter record, the logits processors and the one batched sampler.

`SamplingParams` is how one row is generated (sampling settings, token budget, stop ids and strings, seed), checked
once when it is made. `sample(logits, params, ...)` picks the next token of every row of a (B, vocab) batch, each row
with its own record and, optionally, its own random generator: `generate` passes one record and one generator for
all rows, the server's engine one of each per request row (so a seeded request gives the same text alone or batched).

The processors run in HF's order and in float32 whatever the model's dtype: repetition penalty, no-repeat n-grams,
then (sampling) temperature, top-k, top-p. Top-k looks at the k + 1 most likely tokens, top-p alone at the few
hundred most likely first; both fall back to the whole vocabulary whenever that could change the result, so the
kept set is HF's (up to float rounding where a token's cumulative probability meets top_p). A row with top-k or
top-p draws among its kept tokens alone; one without draws over the whole vocabulary (one call for all such rows
when they share a generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "SamplingParams",
    "apply_repetition_penalty",
    "apply_temperature",
    "ban_repeated_ngrams",
    "process_logits",
    "sample",
    "top_k_filter",
    "top_p_filter",
    "truncated_distribution",
]

NEG_INF = float("-inf")
CANDIDATES = 256  # top-p alone first looks at this many most likely tokens (see `truncated_distribution`)


# ---- logits processors, each a pure function of a (batch, vocab) float tensor ----------------------------------------
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by `temperature` (> 0): below 1 sharpens the distribution, above 1 flattens it."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} cannot scale logits; it must be > 0 (0 means greedy).")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k` highest logits of each row (ties with the k-th kept, as in HF), set the rest to -inf."""
    k = min(int(k), logits.shape[-1])
    if k < 1:
        raise ValueError(f"top_k={k} keeps no token; it must be >= 1.")
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens whose probability reaches `p` (never empty)."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p={p} is outside the accepted range (0, 1].")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the strictly more likely tokens
    drop_sorted = mass_before >= p  # the nucleus is already complete without this token; the top token always stays
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_repetition_penalty(
    logits: torch.Tensor, token_ids: torch.Tensor, penalty: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """HF's (CTRL's) repetition penalty: for every token already in `token_ids` (B, L), a logit s becomes s / penalty
    if s > 0 else s * penalty. `mask` (B, L) marks which positions count (False for padding)."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty={penalty} is invalid; it must be > 0 (1.0 means no penalty).")
    if penalty == 1.0 or token_ids.shape[-1] == 0:
        return logits
    # Counting (scatter_add) rather than scatter_: with repeated ids, scatter_ keeps one arbitrary write.
    real = torch.ones_like(token_ids, dtype=torch.int32) if mask is None else mask.to(torch.int32)
    seen = torch.zeros(logits.shape, dtype=torch.int32, device=logits.device).scatter_add_(-1, token_ids, real) > 0
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def ban_repeated_ngrams(
    logits: torch.Tensor, token_ids: torch.Tensor, n: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Set to -inf every token that would complete an n-gram already present in its row of `token_ids` (B, L).

    `mask` (B, L) marks real positions; an n-gram counts only if all its tokens are real (left padding is skipped).
    """
    if n < 1:
        raise ValueError(f"no_repeat_ngram_size={n} is invalid; it must be >= 1 (0 turns it off).")
    B, L = token_ids.shape
    if L < n:
        return logits
    windows = token_ids.unfold(1, n, 1)  # (B, L-n+1, n)
    if n > 1:
        hit = (windows[:, :, :-1] == token_ids[:, L - n + 1 :].unsqueeze(1)).all(-1)
    else:
        hit = torch.ones(windows.shape[:2], dtype=torch.bool, device=token_ids.device)
    if mask is not None:
        real = mask.bool()
        hit &= real.unfold(1, n, 1).all(-1)
        if n > 1:
            hit &= real[:, L - n + 1 :].all(-1, keepdim=True)
    last = windows[:, :, -1]
    counts = torch.zeros(logits.shape, dtype=torch.int32, device=logits.device)
    banned = counts.scatter_add_(-1, last, hit.to(torch.int32)) > 0  # counting keeps every hit among repeated ids
    return logits.masked_fill(banned, NEG_INF)


# ---- the per-row record --------------------------------------------------------------------------------------------
def as_id_tuple(ids: int | Sequence[int] | None) -> tuple[int, ...]:
    """None, one id or several, as a tuple of ints."""
    if ids is None:
        return ()
    if isinstance(ids, int):
        return (ids,)
    return tuple(int(i) for i in ids)


def as_stop_tuple(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """None, one stop string or several, as a tuple; empty strings are refused."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop={stop!r} is invalid; give non-empty strings.")
    return stops


@dataclass(frozen=True)
class SamplingParams:
    """How one row is generated, checked once: a bad value raises a ValueError naming it and its accepted range.

    Greedy unless `do_sample` (and then temperature 0 is greedy too). `top_k` 0 or None and `top_p` None or 1.0
    are off (stored as None). `eos_token_id` and `stop` take one value or several (stored as tuples); `pad_token_id` defaults to the
    first eos id, else 0. Beam settings (`num_beams`, `length_penalty`) and `num_return_sequences` apply per prompt.
    """

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    eos_token_id: int | tuple[int, ...] | None = ()
    stop: str | tuple[str, ...] | None = ()
    pad_token_id: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        eos = as_id_tuple(self.eos_token_id)
        object.__setattr__(self, "eos_token_id", eos)
        object.__setattr__(self, "stop", as_stop_tuple(self.stop))
        pad = self.pad_token_id
        object.__setattr__(self, "pad_token_id", int(pad) if pad is not None else (eos[0] if eos else 0))
        self._validate()
        if self.top_k == 0:  # 0 turns top-k off, as in HF generate and in `gpt1 serve`: one rule everywhere
            object.__setattr__(self, "top_k", None)
        if self.top_p == 1.0:  # the whole distribution: no top-p
            object.__setattr__(self, "top_p", None)

    def _validate(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} is invalid; it must be an integer >= 1.")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):  # nan passes a plain `< 0` test
            raise ValueError(f"temperature={self.temperature} is invalid; it must be a number >= 0 (0 means greedy).")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} is invalid; it must be >= 0 (0 or None: no top-k).")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} is outside the accepted range (0, 1].")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty={self.repetition_penalty} is invalid; it must be > 0 (1.0 = off).")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size={self.no_repeat_ngram_size} is invalid; it must be >= 0 (0 = off).")
        if self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams} is invalid; it must be >= 1.")
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences={self.num_return_sequences} is invalid; it must be >= 1.")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} is more than num_beams={self.num_beams}; "
                f"beam search returns at most num_beams sequences."
            )
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences > 1:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs do_sample=True or num_beams >= it; "
                f"greedy decoding gives one sequence per prompt."
            )
        if self.num_beams > 1 and self.do_sample:
            raise ValueError("do_sample=True with num_beams > 1 (beam sampling) is not supported; pick one.")

    def truncates(self, vocab_size: int) -> bool:
        """Whether top-k or top-p can drop tokens from a `vocab_size` distribution."""
        return (self.top_k is not None and self.top_k < vocab_size) or self.top_p is not None

    def check_vocab(self, vocab_size: int) -> None:
        """Refuse eos ids outside a model's vocabulary (known only once there is a model)."""
        for i in self.eos_token_id:
            if not 0 <= i < vocab_size:
                raise ValueError(f"eos_token_id={i} is outside the vocabulary [0, {vocab_size}).")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    @property
    def needs_history(self) -> bool:
        """Whether the processors read the row's earlier tokens."""
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0


# ---- the sampler -----------------------------------------------------------------------------------------------------
Generators = torch.Generator | Sequence[torch.Generator | None] | None


def _per_row(params: SamplingParams | Sequence[SamplingParams], batch: int) -> list[SamplingParams]:
    rows = [params] * batch if isinstance(params, SamplingParams) else list(params)
    if len(rows) != batch:
        raise ValueError(f"{len(rows)} sampling records for a batch of {batch} rows.")
    return rows


def _groups(rows: list[SamplingParams], key) -> dict:
    """Row indices by `key(params)`, for the values that are on (not None)."""
    groups: dict = {}
    for b, p in enumerate(rows):
        value = key(p)
        if value is not None:
            groups.setdefault(value, []).append(b)
    return groups


def process_logits(
    logits: torch.Tensor,
    params: SamplingParams | Sequence[SamplingParams],
    history: torch.Tensor | None = None,
    history_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """float32 scores from (B, V) logits: each row's repetition penalty and n-gram ban (over `history` (B, L), real
    where `history_mask`), then, for sampled rows, its temperature. Top-k / top-p come with the draw (`sample`)."""
    rows = _per_row(params, logits.shape[0])
    scores = logits.float()
    if any(p.needs_history for p in rows) and history is None:
        raise ValueError("repetition_penalty and no_repeat_ngram_size need the token history.")
    steps = (
        (
            apply_repetition_penalty,
            _groups(rows, lambda p: p.repetition_penalty if p.repetition_penalty != 1 else None),
        ),
        (ban_repeated_ngrams, _groups(rows, lambda p: p.no_repeat_ngram_size or None)),
    )
    for fn, groups in steps:
        for value, idx in groups.items():
            if len(idx) == len(rows):  # every row alike (always so in `generate`): no gather
                scores = fn(scores, history, value, history_mask)
            else:  # only those rows, in place on a copy of our own
                if scores is logits:
                    scores = scores.clone()
                sel = torch.tensor(idx, device=scores.device)
                mask = history_mask[sel] if history_mask is not None else None
                scores[sel] = fn(scores[sel], history[sel], value, mask)
    temperatures = [1.0 if p.greedy else p.temperature for p in rows]
    if len(set(temperatures)) == 1:
        scores = apply_temperature(scores, temperatures[0])
    else:
        scores = scores / torch.tensor(temperatures, device=scores.device)[:, None]
    return scores


def _candidates(
    scores: torch.Tensor, top_k: int | None, top_p: float | None, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k then top-p for rows (R, V) sharing the settings, among each row's `m` most likely tokens: (values,
    index) (R, m), most likely first; how many of them each row keeps (R,); and which rows' kept set may reach past
    the `m` candidates (redo those with m = V)."""
    vocab = scores.shape[-1]
    k = top_k if top_k and top_k < vocab else vocab
    values, index = torch.topk(scores, m)
    short = m < vocab
    if k < vocab:
        kept = values >= values[:, k - 1 : k]  # ties with the k-th stay, as in HF
        unsure = kept[:, -1] & short  # the tie may go on past the candidates
    else:
        kept = torch.ones_like(values, dtype=torch.bool)
        unsure = torch.zeros_like(kept[:, 0])
    if top_p is not None and top_p < 1.0:
        if k < vocab:  # the distribution top-p sees is the top-k survivors'
            norm = torch.logsumexp(values.masked_fill(~kept, NEG_INF), -1, keepdim=True)
        else:
            norm = torch.logsumexp(scores, -1, keepdim=True)
        probs = (values - norm).exp().masked_fill(~kept, 0.0)
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens; a token goes once that reaches top_p
        kept = kept & (before < top_p)
        kept[:, 0] = True
        if k == vocab:
            unsure |= kept[:, -1] & short  # the nucleus may reach past the candidates
    return values, index, kept.sum(-1), unsure


def _truncated(scores: torch.Tensor, top_k: int | None, top_p: float | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(token ids, probabilities) of each row of `scores` (R, V) after top-k then top-p: `truncated_distribution`
    for rows sharing the settings, batched."""
    vocab = scores.shape[-1]
    k = top_k if top_k and top_k < vocab else vocab
    m = min(vocab, k + 1 if k < vocab else CANDIDATES)  # top-k keeps no more than k (one more shows ties at the k-th)
    values, index, keep, unsure = _candidates(scores, top_k, top_p, m)
    counts = torch.stack((keep, unsure.long())).tolist()  # one look at the device for both
    rows = [(values[r], index[r], n) for r, n in enumerate(counts[0])]
    redo = [r for r, u in enumerate(counts[1]) if u]
    if redo:  # rare: the whole vocabulary, sorted, for the rows that need it
        v, i, n, _ = _candidates(scores[redo], top_k, top_p, vocab)
        for r, vr, ir, nr in zip(redo, v, i, n.tolist()):
            rows[r] = (vr, ir, nr)
    return [(ir[:n], vr[:n].softmax(-1)) for vr, ir, n in rows]


def truncated_distribution(
    scores: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, probabilities) one row's next token is drawn from, after top-k then top-p on its (V,) `scores`.

    The same kept set as `top_k_filter` then `top_p_filter` over the whole vocabulary (ties with the k-th kept, the
    smallest nucleus reaching top_p; up to rounding at its edge), found among the k + 1 (top-p alone: `CANDIDATES`)
    most likely tokens whenever that is provably the same: sorting the full vocabulary every step can cost more
    than a small model's forward pass.
    """
    vocab = scores.numel()
    if not (top_k and top_k < vocab) and (top_p is None or top_p >= 1.0):
        return torch.arange(vocab, device=scores.device), scores.softmax(-1)
    return _truncated(scores.view(1, -1), top_k, top_p)[0]


def sample(
    logits: torch.Tensor,
    params: SamplingParams | Sequence[SamplingParams],
    history: torch.Tensor | None = None,
    history_mask: torch.Tensor | None = None,
    generator: Generators = None,
) -> torch.Tensor:
    """The next token (B,) of every row of `logits` (B, V): argmax for greedy rows, else a draw after the row's
    processors, temperature, top-k and top-p.

    `params`: one record for every row, or one per row. `history` (B, L) / `history_mask`: the tokens so far
    (prompt and generated; needed by repetition penalty and n-gram bans). `generator`: None (torch's default),
    one generator shared by all rows, or one per row, so that a row's draws do not depend on the other rows.
    """
    B, vocab = logits.shape
    rows = _per_row(params, B)
    scores = process_logits(logits, rows, history, history_mask)
    sampled = [b for b, p in enumerate(rows) if not p.greedy]
    out = scores.argmax(dim=-1) if len(sampled) < B else torch.empty(B, dtype=torch.long, device=logits.device)
    if not sampled:
        return out
    per_row = generator is not None and not isinstance(generator, torch.Generator)
    if per_row and len(generator) != B:
        raise ValueError(f"{len(generator)} generators for a batch of {B} rows.")
    whole = [b for b in sampled if not rows[b].truncates(vocab)]
    draws: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}  # row: (token ids or None for all, probs)
    if whole and not per_row:  # the whole vocabulary, one draw for all these rows
        probs = (scores if len(whole) == B else scores[whole]).softmax(dim=-1)
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        out = drawn if len(whole) == B else out.index_copy(0, torch.tensor(whole, device=out.device), drawn)
    else:
        draws.update((b, (None, scores[b].softmax(-1))) for b in whole)
    truncating = _groups(rows, lambda p: (p.top_k, p.top_p) if not p.greedy and p.truncates(vocab) else None)
    for (top_k, top_p), group in truncating.items():  # rows with the same top-k / top-p are filtered together
        draws.update(zip(group, _truncated(scores if len(group) == B else scores[group], top_k, top_p)))
    if not draws:
        return out
    picks = []
    for b in sorted(draws):  # in row order: a shared generator's draws follow the rows
        index, probs = draws[b]
        if index is not None and index.numel() == 1:
            picks.append(index)
            continue
        g = generator[b] if per_row else generator
        drawn = torch.multinomial(probs.to(g.device) if g is not None else probs, 1, generator=g).to(out.device)
        picks.append(drawn if index is None else index[drawn])
    if len(picks) == B:
        return torch.cat(picks)
    return out.index_put_((torch.tensor(sorted(draws), device=out.device),), torch.cat(picks))
