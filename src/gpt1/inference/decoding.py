"""Decoding on the KV cache: prompts in, the prefill, stop rules, text as it grows, and the step-wise `Decoder`.

- `left_pad` / `prepare_inputs`: prompts as a left-padded (B, T) batch with its mask, checked against the context.
- `prefill`: the one prompt pass every decoder starts with (`Decoder`, beam search, the server's engine): per-row
  positions `cumsum(mask) - 1`, so padding never changes a row's result, and a cache sized for what follows.
- `cut_at_stop` / `safe_prefix`: the stop-string rules; `TextStream`: one row's text, decoded incrementally, cut at
  its first stop string, with the part that can be streamed (used by `stream_text` and the server alike).
- `Decoder`: batched greedy / sampling decoding, one token per row per `step()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gpt1.inference.sampling import SamplingParams, sample
from gpt1.model.cache import KVCache

if TYPE_CHECKING:  # the model module does not import this one; only type hints need it here
    from gpt1.model.gpt import GPT

__all__ = [
    "Decoder",
    "Prefill",
    "TextStream",
    "cut_at_stop",
    "left_pad",
    "prefill",
    "prepare_inputs",
    "safe_prefix",
]

log = logging.getLogger(__name__)


# ---- prompts in ----------------------------------------------------------------------------------------------------
def left_pad(prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask for token lists of any lengths, right-aligned (left padding with id 0, mask 0)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + [int(t) for t in p] for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids.view(len(prompts), width), mask.view(len(prompts), width)


def prepare_inputs(
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


# ---- the prefill ---------------------------------------------------------------------------------------------------
@dataclass
class Prefill:
    """What a prompt pass leaves: the next-token logits of each row, the cache, and each row's next position."""

    logits: torch.Tensor  # (rows, vocab), float in the model's dtype
    cache: KVCache
    next_pos: torch.Tensor  # (rows,) position of the token fed next


@torch.inference_mode()
def prefill(model: GPT, ids: torch.Tensor, mask: torch.Tensor, capacity: int, repeat: int = 1) -> Prefill:
    """Run left-padded prompts (B, T) once into a cache of `capacity` positions; each prompt's row is then repeated
    `repeat` times (samples or beams of one prompt share its prefill). (The model arranges its weights for decoding
    on its first call with a cache.)"""
    B = ids.shape[0]
    cache = KVCache(model.config, B, capacity, model.device, model.dtype)
    padded = bool((mask == 0).any())
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    out = model(ids, attention_mask=mask if padded else None, position_ids=positions, cache=cache, logits_to_keep=1)
    logits, next_pos = out.logits[:, -1], mask.sum(1)
    if repeat > 1:
        rows = torch.arange(B, device=ids.device).repeat_interleave(repeat)
        cache.reorder(rows)
        logits, next_pos = logits[rows], next_pos[rows]
    return Prefill(logits, cache, next_pos)


# ---- stop strings and text as it grows -----------------------------------------------------------------------------
def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` before the first stop string in it, and whether there was one."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _stop_prefix_overlap(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (held back until we know)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def safe_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of a growing completion that later tokens cannot change, so it may be streamed: up to the last
    space (the last word may still grow, or lose the space before it to clean-up), minus a tail that could be the
    start of a stop string."""
    stable = text[: max(text.rfind(" "), 0)]
    return stable[: len(stable) - _stop_prefix_overlap(stable, stops)]


def _after(full: str, head: str) -> str:
    """The part of `full` (context + completion, decoded together) after the context's own text `head`."""
    if full.startswith(head):
        return full[len(head) :]
    # Clean-up joined the two (e.g. the context ended with " '"): cut where they stop agreeing.
    n = 0
    while n < min(len(full), len(head)) and full[n] == head[n]:
        n += 1
    return full[n:]


class TextStream:
    """One row's completion as text while it grows: the generated tokens decoded (after `context`, the prompt's last
    tokens, when given, so the join reads as in the whole text), cut before the first stop string.

    `pop_safe()` hands out what became `safe_prefix` since the last call; `pop_rest()`, at the end, the rest.
    """

    def __init__(self, tokenizer, stops: Sequence[str] = (), context: Sequence[int] = ()) -> None:
        self.tokenizer, self.stops, self.context = tokenizer, tuple(stops), list(context)
        self.context_text = tokenizer.decode(self.context) if self.context else ""
        self.text, self.stopped, self.sent = "", False, ""
        self._decoded = 0  # how many tokens `text` is made of

    def update(self, tokens: Sequence[int]) -> bool:
        """Re-read the completion from all its `tokens` so far (no eos); True once a stop string appeared."""
        if len(tokens) != self._decoded:
            if self.context:
                full = _after(self.tokenizer.decode(self.context + list(tokens)), self.context_text)
            else:
                full = self.tokenizer.decode(tokens)
            self.text, self.stopped = cut_at_stop(full, self.stops)
            self._decoded = len(tokens)
        return self.stopped

    def pop_safe(self) -> str:
        """New text that can no longer change (empty if none)."""
        return self._pop(safe_prefix(self.text, self.stops))

    def pop_rest(self) -> str:
        """The final text's part not handed out yet (the completion is over: all of it counts now)."""
        if not self.text.startswith(self.sent):
            log.warning("completion text changed after part of it was streamed; the stream cannot take it back")
        return self._pop(self.text)

    def _pop(self, upto: str) -> str:
        if len(upto) > len(self.sent) and upto.startswith(self.sent):
            piece, self.sent = upto[len(self.sent) :], upto
            return piece
        return ""


# ---- step-wise decoding (greedy and sampling) ------------------------------------------------------------------------
class Decoder:
    """Batched greedy/sampling decoding on a KV cache, one step at a time.

    Construction runs the prompt (prefill); each `step()` returns the next token of every row, (B,) with
    `pad_token_id` for rows already finished. Rows stop independently (eos id, stop string, token budget).
    `tokens[b]` lists row b's generated ids so far (eos included, padding not); `row_text(b)` its text.
    """

    def __init__(
        self,
        model: GPT,
        input_ids,
        attention_mask=None,
        *,
        params: SamplingParams | None = None,
        tokenizer=None,
        truncate_left: bool = False,
        **settings,
    ) -> None:
        """`settings` are `SamplingParams` fields (`generate`'s keywords: max_new_tokens, do_sample, top_p, seed ...);
        or pass a ready `params` record. `tokenizer` reads stop strings; `truncate_left` as in `generate`."""
        if params is not None and settings:
            raise TypeError(f"give Decoder a params record or its settings, not both (got {sorted(settings)}).")
        self.model = model
        self.params = p = params if params is not None else SamplingParams(**settings)
        if p.num_beams != 1:
            raise ValueError("Decoder decodes one sequence per row; beam search is generate(..., num_beams=N).")
        p.check_vocab(model.config.vocab_size)
        if p.stop and tokenizer is None:
            raise ValueError("stop strings need the tokenizer (pass tokenizer=...) to read the generated text.")
        self.tokenizer = tokenizer
        ids, mask = prepare_inputs(model, input_ids, attention_mask, p.max_new_tokens, truncate_left)
        self.prompt_ids, self.prompt_mask = ids, mask
        self.generator: torch.Generator | None = None
        if p.seed is not None:
            self.generator = torch.Generator(device=model.device).manual_seed(int(p.seed))

        n = p.num_return_sequences
        first = prefill(model, ids, mask, ids.shape[1] + p.max_new_tokens, repeat=n)
        self.cache, self.next_pos, self._logits = first.cache, first.next_pos, first.logits
        if n > 1:
            rows = torch.arange(ids.shape[0], device=ids.device).repeat_interleave(n)
            ids, mask = ids[rows], mask[rows]
        self.batch_size = B = ids.shape[0]
        # Token history for the penalties: prompt (with its padding mask) followed by the generated tokens.
        self._history = torch.cat([ids, ids.new_full((B, p.max_new_tokens), p.pad_token_id)], 1)
        self._history_mask = torch.cat([mask.bool(), mask.new_zeros((B, p.max_new_tokens)).bool()], 1)
        self._prompt_len = ids.shape[1]
        self.finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
        self.tokens: list[list[int]] = [[] for _ in range(B)]
        self.texts = [TextStream(tokenizer, p.stop) for _ in range(B)] if tokenizer is not None else None
        self.steps = 0
        self._eos = torch.tensor(p.eos_token_id, dtype=torch.long, device=ids.device) if p.eos_token_id else None

    @property
    def done(self) -> bool:
        """True once every row has finished or the token budget is spent."""
        return self.steps >= self.params.max_new_tokens or bool(self.finished.all())

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Choose, record and feed back the next token of every row; returns them (B,)."""
        if self.done:
            raise RuntimeError("Decoder.step() called after decoding finished; check .done first.")
        p = self.params
        if self.steps > 0:  # the last step's tokens have not been run through the model yet
            out = self.model(
                self._last[:, None], position_ids=self.next_pos[:, None], cache=self.cache, logits_to_keep=1
            )
            self._logits = out.logits[:, -1]
            self.next_pos = self.next_pos + 1
        end = self._prompt_len + self.steps
        history = (self._history[:, :end], self._history_mask[:, :end]) if p.needs_history else (None, None)
        nxt = sample(self._logits, p, *history, generator=self.generator)
        nxt = nxt.masked_fill(self.finished, p.pad_token_id)
        self._history[:, end] = nxt
        self._history_mask[:, end] = ~self.finished
        self._last = nxt
        self.steps += 1
        was_finished = self.finished.clone()
        if self._eos is not None:
            self.finished |= torch.isin(nxt, self._eos)
        new = nxt.tolist()
        for b in range(self.batch_size):
            if not was_finished[b]:
                self.tokens[b].append(new[b])
                if p.stop and not self.finished[b] and self.texts[b].update(self.tokens[b]):
                    self.finished[b] = True
        return nxt

    def row_text(self, b: int) -> TextStream:
        """Row b's text so far (without a final eos token), cut before its first stop string; needs the tokenizer."""
        if self.texts is None:
            raise ValueError("the Decoder reads text only with a tokenizer (pass tokenizer=...).")
        tokens = self.tokens[b]
        if tokens and tokens[-1] in self.params.eos_token_id:
            tokens = tokens[:-1]
        self.texts[b].update(tokens)
        return self.texts[b]

    def sequences(self) -> torch.Tensor:
        """(B, prompt + generated) ids: the prompts as given (left padding kept) then the generated tokens."""
        return self._history[:, : self._prompt_len + self.steps].clone()

    def __iter__(self) -> Iterator[torch.Tensor]:
        while not self.done:
            yield self.step()
