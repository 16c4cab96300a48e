"""Decoding for GPT-1 on the KV cache: logits processors, greedy / sampling / beam search, stop rules, streaming.

Public functions (argument names follow `transformers`' `generate` so users can move over without relearning):
- `generate(model, input_ids, attention_mask=None, max_new_tokens=20, ...) -> torch.LongTensor | GenerateOutput`
  (also `GPT.generate`): greedy, multinomial sampling, beam search; left-padded batches; stop ids and strings.
- `Decoder(model, input_ids, attention_mask=None, ...)`: the step-wise batched primitive under greedy and sampling:
  prefill once, then `step()` emits one token per row (servers build streaming and batching on it).
- `stream_text(model, tokenizer, prompt, ...) -> Iterator[str]`: the continuation of one prompt, piece by piece.
- `generate_text(model, tokenizer, prompt_or_prompts, ...) -> str | list[str]`: prompts in, continuations out.
- Logits processors, each a pure function of a (batch, vocab) float tensor: `apply_temperature`, `top_k_filter`,
  `top_p_filter`, `apply_repetition_penalty`, `ban_repeated_ngrams`.

Conventions: left padding with per-row positions `cumsum(mask) - 1` (padding never changes a row's result);
processors and sampling run in float32 whatever the model's dtype; a row stops on its own at an eos id or a stop
string and is then filled with `pad_token_id`; `seed` makes sampling reproducible (a private `torch.Generator`).
GPT-1 has no start-of-text token, so an empty prompt is an error unless `start_token_id` is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from gpt1.model.gpt import KVCache

if TYPE_CHECKING:  # the model module does not import this one; only type hints need it here
    from gpt1.model.gpt import GPT

__all__ = [
    "Decoder",
    "GenerateOutput",
    "apply_repetition_penalty",
    "apply_temperature",
    "ban_repeated_ngrams",
    "check_generation_settings",
    "generate",
    "generate_text",
    "stream_text",
    "top_k_filter",
    "top_p_filter",
]

NEG_INF = float("-inf")


# ---- logits processors -----------------------------------------------------------------------------------------
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


# ---- settings ----------------------------------------------------------------------------------------------------
def _as_id_list(ids: int | Sequence[int] | None) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _as_str_list(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop={stop!r} is invalid; give non-empty strings.")
    return stops


@dataclass
class _Settings:
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float
    no_repeat_ngram_size: int
    num_beams: int
    length_penalty: float
    num_return_sequences: int
    eos_ids: list[int]
    stop: list[str]
    pad_token_id: int
    seed: int | None

    def validate(self, vocab_size: int) -> None:
        """One sentence per bad value, naming it and the accepted range."""
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
        if self.num_beams > 1 and self.stop:
            raise ValueError("stop strings are not supported with beam search; use eos_token_id.")
        for i in self.eos_ids:
            if not 0 <= i < vocab_size:
                raise ValueError(f"eos_token_id={i} is outside the vocabulary [0, {vocab_size}).")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


def _settings(vocab_size: int, **kw) -> _Settings:
    eos_ids = _as_id_list(kw.pop("eos_token_id"))
    pad = kw.pop("pad_token_id")
    s = _Settings(
        eos_ids=eos_ids,
        stop=_as_str_list(kw.pop("stop")),
        pad_token_id=int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0),
        **kw,
    )
    if s.top_k == 0:  # 0 turns top-k off, as in HF generate and in `gpt1 serve`: one rule everywhere
        s.top_k = None
    s.validate(vocab_size)
    return s


def check_generation_settings(max_new_tokens: int = 20, truncate_left: bool = False, **kwargs) -> None:
    """Raise the ValueError `generate` would raise for these settings, without a model (so a CLI can refuse a bad
    value before it loads or downloads one). Keywords are `generate`'s; token ids are checked against the model
    later, when its vocabulary is known."""
    defaults = dict(
        do_sample=False,
        temperature=1.0,
        top_k=None,
        top_p=None,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        num_beams=1,
        length_penalty=1.0,
        num_return_sequences=1,
        eos_token_id=None,
        stop=None,
        pad_token_id=None,
        seed=None,
    )
    _settings(1 << 62, max_new_tokens=max_new_tokens, **{**defaults, **kwargs})


def _prepare_inputs(
    model: GPT, input_ids, attention_mask, max_new_tokens: int, truncate_left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask on the model's device, checked against the context; cut from the left when asked."""
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=model.device)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len); got {tuple(ids.shape)}.")
    mask = (
        torch.ones_like(ids)
        if attention_mask is None
        else torch.as_tensor(attention_mask, device=model.device).long().reshape(ids.shape[0], -1)
    )
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but input_ids has {tuple(ids.shape)}.")
    if ids.shape[1] == 0 or bool((mask.sum(1) == 0).any()):
        raise ValueError(
            "A prompt is empty; GPT-1 has no start-of-text token, so give at least one token (or a start_token_id)."
        )
    vocab = model.config.vocab_size
    if bool(((ids < 0) | (ids >= vocab))[mask.bool()].any()):
        raise ValueError(f"input_ids contain a token id outside the vocabulary [0, {vocab}).")
    n_pos = model.config.n_positions
    if max_new_tokens >= n_pos:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's {n_pos}-position context; "
            f"it must be at most {n_pos - 1}."
        )
    room = n_pos - max_new_tokens
    if ids.shape[1] > room:
        longest = int(mask.sum(1).max())
        if longest > room and not truncate_left:
            raise ValueError(
                f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's context of "
                f"{n_pos} positions; shorten the prompt, lower max_new_tokens, or pass truncate_left=True."
            )
        ids, mask = ids[:, -room:], mask[:, -room:]  # only padding (or, when asked, the oldest tokens) goes
    return ids, mask


# ---- step-wise decoding (greedy and sampling) -----------------------------------------------------------------------
class Decoder:
    """Batched greedy/sampling decoding on a KV cache, one step at a time.

    Construction runs the prompt (prefill); each `step()` returns the next token of every row, (B,) with
    `pad_token_id` for rows already finished. Rows stop independently (eos id, stop string, token budget).
    `tokens[b]` lists row b's generated ids so far (eos included, padding not).
    """

    def __init__(
        self,
        model: GPT,
        input_ids,
        attention_mask=None,
        *,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        num_return_sequences: int = 1,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        stop: str | Sequence[str] | None = None,
        tokenizer=None,
        seed: int | None = None,
        truncate_left: bool = False,
    ) -> None:
        self.model = model
        self.s = _settings(
            model.config.vocab_size,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            num_beams=1,
            length_penalty=1.0,
            num_return_sequences=num_return_sequences,
            eos_token_id=eos_token_id,
            stop=stop,
            pad_token_id=pad_token_id,
            seed=seed,
        )
        if self.s.stop and tokenizer is None:
            raise ValueError("stop strings need the tokenizer (pass tokenizer=...) to read the generated text.")
        self.tokenizer = tokenizer
        ids, mask = _prepare_inputs(model, input_ids, attention_mask, max_new_tokens, truncate_left)
        self.prompt_ids, self.prompt_mask = ids, mask
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=model.device).manual_seed(int(seed))
        self._stop_window = max((len(s) for s in self.s.stop), default=0) + 2  # tokens to decode when checking stops
        self._prefill()

    @torch.inference_mode()
    def _prefill(self) -> None:
        model, ids, mask = self.model, self.prompt_ids, self.prompt_mask
        B, T = ids.shape
        model.use_decode_layout()
        self.cache = KVCache(model.config, B, T + self.s.max_new_tokens, model.device, model.dtype)
        padded = bool((mask == 0).any())
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        out = model(
            ids, attention_mask=mask if padded else None, position_ids=positions, cache=self.cache, logits_to_keep=1
        )
        logits = out.logits[:, -1]
        self.next_pos = mask.sum(1)
        n = self.s.num_return_sequences
        if n > 1:  # prefill once, then copy each prompt's cache n times
            rows = torch.arange(B, device=ids.device).repeat_interleave(n)
            self.cache.reorder(rows)
            logits, self.next_pos = logits[rows], self.next_pos[rows]
            ids, mask = ids[rows], mask[rows]
        self.batch_size = ids.shape[0]
        # Token history for the penalties: prompt (with its padding mask) followed by the generated tokens.
        self._history = torch.cat([ids, ids.new_full((ids.shape[0], self.s.max_new_tokens), self.s.pad_token_id)], 1)
        self._history_mask = torch.cat([mask.bool(), mask.new_zeros((ids.shape[0], self.s.max_new_tokens)).bool()], 1)
        self._prompt_len = ids.shape[1]
        self._logits = logits
        self.finished = torch.zeros(self.batch_size, dtype=torch.bool, device=ids.device)
        self.tokens: list[list[int]] = [[] for _ in range(self.batch_size)]
        self.steps = 0
        self._eos = torch.tensor(self.s.eos_ids, dtype=torch.long, device=ids.device) if self.s.eos_ids else None

    @property
    def done(self) -> bool:
        """True once every row has finished or the token budget is spent."""
        return self.steps >= self.s.max_new_tokens or bool(self.finished.all())

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits processors in HF's order: repetition penalty, no-repeat n-grams, then (sampling) temperature,
        top-k, top-p. Works in float32."""
        s, scores = self.s, logits.float()
        end = self._prompt_len + self.steps
        if s.repetition_penalty != 1.0:
            scores = apply_repetition_penalty(
                scores, self._history[:, :end], s.repetition_penalty, self._history_mask[:, :end]
            )
        if s.no_repeat_ngram_size:
            scores = ban_repeated_ngrams(
                scores, self._history[:, :end], s.no_repeat_ngram_size, self._history_mask[:, :end]
            )
        if not s.greedy:
            scores = apply_temperature(scores, s.temperature)
            if s.top_k is not None:
                scores = top_k_filter(scores, s.top_k)
            if s.top_p is not None:
                scores = top_p_filter(scores, s.top_p)
        return scores

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Choose, record and feed back the next token of every row; returns them (B,)."""
        if self.done:
            raise RuntimeError("Decoder.step() called after decoding finished; check .done first.")
        if self.steps > 0:  # the last step's tokens have not been run through the model yet
            out = self.model(
                self._last[:, None], position_ids=self.next_pos[:, None], cache=self.cache, logits_to_keep=1
            )
            self._logits = out.logits[:, -1]
            self.next_pos = self.next_pos + 1
        scores = self.process(self._logits)
        if self.s.greedy:
            nxt = scores.argmax(dim=-1)
        else:
            nxt = torch.multinomial(scores.softmax(dim=-1), 1, generator=self.generator).squeeze(1)
        nxt = nxt.masked_fill(self.finished, self.s.pad_token_id)
        col = self._prompt_len + self.steps
        self._history[:, col] = nxt
        self._history_mask[:, col] = ~self.finished
        self._last = nxt
        self.steps += 1
        was_finished = self.finished.clone()
        if self._eos is not None:
            self.finished |= torch.isin(nxt, self._eos)
        new = nxt.tolist()
        for b in range(self.batch_size):
            if not was_finished[b]:
                self.tokens[b].append(new[b])
        if self.s.stop:
            for b in range(self.batch_size):
                if not self.finished[b] and self._hits_stop(self.tokens[b]):
                    self.finished[b] = True
        return nxt

    def _hits_stop(self, tokens: list[int]) -> bool:
        tail = self.tokenizer.decode(tokens[-self._stop_window :])
        return any(s in tail for s in self.s.stop)

    def sequences(self) -> torch.Tensor:
        """(B, prompt + generated) ids: the prompts as given (left padding kept) then the generated tokens."""
        return self._history[:, : self._prompt_len + self.steps].clone()

    def __iter__(self) -> Iterator[torch.Tensor]:
        while not self.done:
            yield self.step()


# ---- beam search -------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def _beam_search(model: GPT, ids: torch.Tensor, mask: torch.Tensor, s: _Settings):
    """HF's (4.57) vectorised beam search, on the KV cache: same candidates, same finishing rule, same scores."""
    B, T0 = ids.shape
    K, V = s.num_beams, model.config.vocab_size
    L = T0 + s.max_new_tokens
    dev = ids.device
    model.use_decode_layout()
    cache = KVCache(model.config, B, L, model.device, model.dtype)
    padded = bool((mask == 0).any())
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    logits = model(
        ids, attention_mask=mask if padded else None, position_ids=positions, cache=cache, logits_to_keep=1
    ).logits[:, -1]
    rows = torch.arange(B, device=dev).repeat_interleave(K)
    cache.reorder(rows)
    logits = logits[rows]
    next_pos = mask.sum(1)[rows]
    hist_mask = torch.cat([mask.bool(), mask.new_ones((B, s.max_new_tokens)).bool()], 1)[rows]

    keep = max(2, 1 + len(s.eos_ids)) * K
    top_num_beam_mask = torch.arange(keep, device=dev) < K
    eos = torch.tensor(s.eos_ids, dtype=torch.long, device=dev) if s.eos_ids else None
    running = ids.new_full((B, K, L), s.pad_token_id)
    running[:, :, :T0] = ids[:, None, :]
    sequences = running.clone()
    running_scores = torch.zeros((B, K), dtype=torch.float, device=dev)
    running_scores[:, 1:] = -1e9  # all beams start equal: only the first may expand at step one
    beam_scores = torch.full((B, K), -1e9, dtype=torch.float, device=dev)
    lengths = torch.zeros((B, K), dtype=torch.long, device=dev)  # generated length of each finished hypothesis
    finished = torch.zeros((B, K), dtype=torch.bool, device=dev)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=dev)
    cur = T0
    lp = s.length_penalty
    while True:
        log_probs = F.log_softmax(logits.float(), dim=-1)
        flat_hist = running[:, :, :cur].reshape(B * K, cur)
        if s.repetition_penalty != 1.0:
            log_probs = apply_repetition_penalty(log_probs, flat_hist, s.repetition_penalty, hist_mask[:, :cur])
        if s.no_repeat_ngram_size:
            log_probs = ban_repeated_ngrams(log_probs, flat_hist, s.no_repeat_ngram_size, hist_mask[:, :cur])
        acc = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_lp, top_idx = torch.topk(acc, keep)
        src, tok = top_idx // V, top_idx % V
        top_seqs = torch.take_along_dim(running, src[:, :, None], dim=1)
        top_seqs[:, :, cur] = tok
        hits = torch.zeros_like(tok, dtype=torch.bool) | (cur + 1 >= L)
        if eos is not None:
            hits |= torch.isin(tok, eos)
        # The best `K` candidates that did not stop keep running.
        run_lp = top_lp + hits.float() * -1e9
        nxt = torch.topk(run_lp, K)[1]
        running = torch.take_along_dim(top_seqs, nxt[:, :, None], dim=1)
        running_scores = torch.take_along_dim(run_lp, nxt, dim=1)
        origin = torch.take_along_dim(src, nxt, dim=1)
        # Candidates among the top K that stopped join the finished hypotheses if they beat the worst kept one.
        just = hits & top_num_beam_mask[None, :]
        norm = top_lp / ((cur + 1 - T0) ** lp)
        # (HF's early_stopping=True would also close full batches here; we keep its default, False.)
        norm = norm + (~improvable).float() * -1e9
        norm = norm + (~just).float() * -1e9
        merged_idx = torch.topk(torch.cat([beam_scores, norm], 1), K)[1]
        sequences = torch.take_along_dim(torch.cat([sequences, top_seqs], 1), merged_idx[:, :, None], dim=1)
        beam_scores = torch.take_along_dim(torch.cat([beam_scores, norm], 1), merged_idx, dim=1)
        lengths = torch.take_along_dim(
            torch.cat([lengths, torch.full_like(norm, cur + 1 - T0, dtype=torch.long)], 1), merged_idx, dim=1
        )
        finished = torch.take_along_dim(torch.cat([finished, just], 1), merged_idx, dim=1)
        cur += 1
        # HF's stopping heuristic (early_stopping=False): stop once no running beam can beat the worst finished one.
        best_running = running_scores[:, :1] / ((cur - T0) ** lp)
        worst_finished = torch.where(finished, beam_scores.min(dim=1, keepdim=True)[0], -1.0e9)
        improvable = improvable & (best_running > worst_finished).any(-1, keepdim=True)
        if not bool(improvable.any()) or bool(hits.all()):
            break
        flat_origin = (origin + torch.arange(B, device=dev)[:, None] * K).view(-1)
        cache.reorder(flat_origin)
        logits = model(
            running[:, :, cur - 1].reshape(-1, 1), position_ids=next_pos[:, None], cache=cache, logits_to_keep=1
        ).logits[:, -1]
        next_pos = next_pos + 1
    n = s.num_return_sequences
    sequences, beam_scores, lengths = sequences[:, :n].reshape(B * n, L), beam_scores[:, :n].reshape(-1), lengths[:, :n]
    sequences = sequences[:, : T0 + int(lengths.max())]
    return sequences, beam_scores, lengths.reshape(-1)


# ---- the one entry point ---------------------------------------------------------------------------------------------
@dataclass
class GenerateOutput:
    """`generate(..., return_dict_in_generate=True)`: ids, and for beam search HF's `sequences_scores`."""

    sequences: torch.Tensor  # (B * num_return_sequences, prompt + generated), rows finished early padded
    sequences_scores: torch.Tensor | None = None  # beam search: length-normalised log-probability
    num_generated: torch.Tensor | None = None  # (rows,) tokens generated per row (eos included)


def generate(
    model: GPT,
    input_ids,
    attention_mask=None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    num_return_sequences: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    stop: str | Sequence[str] | None = None,
    tokenizer=None,
    seed: int | None = None,
    truncate_left: bool = False,
    return_dict_in_generate: bool = False,
) -> torch.Tensor | GenerateOutput:
    """Continue `input_ids` (B, T) (left-padded, with `attention_mask`, for prompts of different lengths).

    Returns the prompts followed by the new tokens, (B * num_return_sequences, T + generated), rows that stopped
    early filled with `pad_token_id` (default: the first eos id, else 0) — the layout HF's `generate` returns.
    `stop` strings need `tokenizer`; `truncate_left` drops the oldest prompt tokens instead of refusing a prompt
    that leaves no room for `max_new_tokens` in the context.
    """
    if num_beams != 1:  # beam search (values below 1 are refused by its settings check)
        s = _settings(
            model.config.vocab_size,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            num_beams=num_beams,
            length_penalty=length_penalty,
            num_return_sequences=num_return_sequences,
            eos_token_id=eos_token_id,
            stop=stop,
            pad_token_id=pad_token_id,
            seed=seed,
        )
        ids, mask = _prepare_inputs(model, input_ids, attention_mask, max_new_tokens, truncate_left)
        seqs, scores, lengths = _beam_search(model, ids, mask, s)
        if return_dict_in_generate:
            return GenerateOutput(sequences=seqs, sequences_scores=scores, num_generated=lengths)
        return seqs
    dec = Decoder(
        model,
        input_ids,
        attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        num_return_sequences=num_return_sequences,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        stop=stop,
        tokenizer=tokenizer,
        seed=seed,
        truncate_left=truncate_left,
    )
    for _ in dec:
        pass
    seqs = dec.sequences()
    if return_dict_in_generate:
        counts = torch.tensor([len(t) for t in dec.tokens], device=seqs.device)
        return GenerateOutput(sequences=seqs, num_generated=counts)
    return seqs


# ---- text in, text out -------------------------------------------------------------------------------------------------
def _encode_prompts(tokenizer, prompts: Sequence[str], start_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, T) ids and mask for `prompts`; `start_token_id`, when given, is put before each prompt."""
    encoded = []
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompt {p!r} is not a string.")
        ids = ([start_token_id] if start_token_id is not None else []) + tokenizer.encode(p)
        if not ids:
            raise ValueError(
                "The prompt is empty; GPT-1 has no start-of-text token, so give some text (or a start_token_id)."
            )
        encoded.append(ids)
    T = max(len(e) for e in encoded)
    ids = torch.zeros((len(encoded), T), dtype=torch.long)
    mask = torch.zeros((len(encoded), T), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, T - len(e) :] = torch.tensor(e)
        mask[i, T - len(e) :] = 1
    return ids, mask


def _without_beams(kwargs: dict) -> dict:
    """`generate`'s keywords minus the beam-only ones, for `Decoder` (one beam)."""
    return {k: v for k, v in kwargs.items() if k not in ("num_beams", "length_penalty")}


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _continuation_text(tokenizer, tokens: list[int], eos_ids: Sequence[int], stops: Sequence[str]) -> str:
    """Decoded new tokens, without a final eos token and cut before the first stop string."""
    if tokens and tokens[-1] in eos_ids:
        tokens = tokens[:-1]
    return _cut_at_stop(tokenizer.decode(tokens), stops)[0]


def generate_text(
    model: GPT,
    tokenizer,
    prompt_or_prompts: str | Sequence[str],
    max_new_tokens: int = 50,
    start_token_id: int | None = None,
    **kwargs,
) -> str | list[str]:
    """Continuations of one prompt (a str back) or several (a list back, `num_return_sequences` per prompt in order).

    Keyword arguments are `generate`'s; the returned text leaves out the prompt, a final eos token and everything
    from the first `stop` string on.
    """
    single = isinstance(prompt_or_prompts, str)
    prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
    if not prompts:
        raise ValueError("No prompts given; pass a string or a non-empty list of strings.")
    ids, mask = _encode_prompts(tokenizer, prompts, start_token_id)
    eos = _as_id_list(kwargs.get("eos_token_id"))
    stops = _as_str_list(kwargs.get("stop"))
    if kwargs.get("num_beams", 1) != 1:  # `generate` refuses num_beams < 1 instead of quietly decoding greedily
        out = generate(model, ids, mask, max_new_tokens=max_new_tokens, return_dict_in_generate=True, **kwargs)
        T = ids.shape[1]
        rows = [out.sequences[i, T : T + int(n)].tolist() for i, n in enumerate(out.num_generated)]
    else:
        dec = Decoder(model, ids, mask, max_new_tokens=max_new_tokens, tokenizer=tokenizer, **_without_beams(kwargs))
        for _ in dec:
            pass
        rows = dec.tokens
    texts = [_continuation_text(tokenizer, r, eos, stops) for r in rows]
    return texts[0] if single and len(texts) == 1 else texts


def stream_text(
    model: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    start_token_id: int | None = None,
    **kwargs,
) -> Iterator[str]:
    """The continuation of one prompt as text pieces, yielded as tokens are generated; their concatenation is what
    `generate_text` returns for the same arguments. Greedy or sampling (not beam search)."""
    if kwargs.get("num_beams", 1) != 1 or kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("stream_text generates one sequence: num_beams and num_return_sequences must be 1.")
    ids, mask = _encode_prompts(tokenizer, [prompt], start_token_id)
    eos = _as_id_list(kwargs.get("eos_token_id"))
    stops = _as_str_list(kwargs.get("stop"))
    hold = max((len(s) for s in stops), default=1) - 1  # a stop string may be starting in the last characters
    dec = Decoder(model, ids, mask, max_new_tokens=max_new_tokens, tokenizer=tokenizer, **_without_beams(kwargs))
    sent = ""
    while not dec.done:
        dec.step()
        tokens = dec.tokens[0]
        if dec.done:
            break
        text, stopped = _cut_at_stop(tokenizer.decode(tokens), stops)
        safe = text[: len(text) - hold] if hold else text
        if len(safe) > len(sent) and safe.startswith(sent):
            yield safe[len(sent) :]
            sent = safe
    final = _continuation_text(tokenizer, dec.tokens[0], eos, stops)
    if final.startswith(sent):
        if len(final) > len(sent):
            yield final[len(sent) :]
    # Decoding is prefix-stable for GPT-1's BPE (pieces only append); should clean-up ever rewrite sent text,
    # the stream has already shown it and cannot take it back.
