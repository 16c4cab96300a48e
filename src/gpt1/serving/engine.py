"""Continuous batching for `gpt1 serve`: one engine thread owns the model and decodes every active row together.

Each step it prefills newly admitted prompts in a batch of their own (`gpt1.inference.decoding.prefill`), splices
their keys and values into the running batch (rows right-aligned, left padding masked), then decodes one token for
every row with `gpt1.inference.sampling.sample`. Every row has its own `SamplingParams`, random generator, stop
strings and `TextStream`, so requests never see each other's tokens and a seeded request gives the same text alone
or batched. Events go back to each request's asyncio queue; the HTTP side never touches the model.

Log-probabilities (`logprobs`) are read from the same logits a row's token is chosen from; a request that echoes them
for its prompt has its prompts scored by one forward as they are admitted (`gpt1.inference.scoring`), and one that
asks at most one new token (what evaluation harnesses send) takes it from that forward and never enters the cache.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from gpt1.inference.decoding import TextStream, left_pad, prefill
from gpt1.inference.generate import generate
from gpt1.inference.sampling import SamplingParams, sample
from gpt1.inference.scoring import TokenScores, score_with_next
from gpt1.model.cache import KVCache
from gpt1.model.gpt import GPT

if TYPE_CHECKING:
    from gpt1.serving.metrics import ServerMetrics

__all__ = ["Choice", "Engine", "GenRequest", "QueueFull"]

log = logging.getLogger("gpt1.serving.engine")

PROMPT_CONTEXT = 64  # prompt tokens a completion is decoded after (clean-up is local, so a tail reads the join)


@dataclass
class Choice:
    """One sequence being generated: a row of the batch while active."""

    request: GenRequest
    index: int
    prompt_ids: list[int]
    generator: torch.Generator
    tokens: list[int]  # prompt + generated (an end-of-text token is not kept)
    generated: int = 0
    finish_reason: str | None = None
    stream: TextStream | None = None  # the completion's text, made when the row starts
    prompt_scores: TokenScores | None = None  # the prompt's log-probabilities, when the request echoes them
    # (token, its log-probability, top (id, logprob) entries) per generated token, an end-of-text token included
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)

    @property
    def score_only(self) -> bool:
        """Scored by one forward of its prompt, its next token (if any) read from the same logits: it needs no cache."""
        return self.request.echo_logprobs and self.request.max_tokens <= 1

    @property
    def steps_left(self) -> int:
        return self.request.max_tokens - self.generated

    @property
    def text(self) -> str:
        return self.stream.text if self.stream is not None else ""


class GenRequest:
    """A submitted request: its choices, and the asyncio queue its events go to (filled from the engine thread)."""

    def __init__(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int,
        loop: asyncio.AbstractEventLoop,
        logprobs: int | None = None,
        echo: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.params = params
        self.loop = loop
        self.logprobs = logprobs  # top entries per token to report (None: no log-probabilities)
        self.echo_logprobs = echo and logprobs is not None  # also score the prompt
        # Tokens to generate: params.max_new_tokens, or 0 for a request that only scores its prompt.
        self.max_tokens = params.max_new_tokens if max_tokens is None else max_tokens
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self.counted_cancel = False
        self.prompts = prompts
        base_seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.choices: list[Choice] = []
        for p, ids in enumerate(prompts):
            for j in range(n):
                index = p * n + j
                g = torch.Generator().manual_seed((base_seed + index) % 2**63)  # a seed per choice: reproducible alone
                self.choices.append(Choice(self, index, list(ids), g, tokens=list(ids)))

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, event: tuple) -> None:
        """Hand an event to the request's HTTP handler (called from the engine thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self.cancelled = True


class QueueFull(Exception):
    pass


class Engine:
    """Continuous batching over `model` in a background thread; at most `max_batch` rows decode together."""

    def __init__(
        self, model: GPT, tokenizer, max_batch: int = 8, max_queue: int = 64, metrics: ServerMetrics | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}.")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more; got {max_queue}.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.waiting: deque[Choice] = deque()
        self.exclusive: deque[GenRequest] = deque()  # beam-search requests, run on their own between steps
        self.active: list[Choice] = []
        self.cache: KVCache | None = None
        self.lock = threading.Condition()
        self.metrics = metrics  # told when a request is queued and when each token is chosen (for /metrics)
        # steps: decode steps; rows_decoded: rows summed over them (their ratio is the mean batch size).
        self.stats = {
            "requests": 0,
            "requests_cancelled": 0,
            "prompt_tokens": 0,
            "tokens_generated": 0,
            "steps": 0,
            "rows_decoded": 0,
            "max_rows": 0,
        }
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- life cycle --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpt1-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stop = True
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, request: GenRequest) -> None:
        """Queue a request, or raise QueueFull when `max_queue` requests are already waiting."""
        with self.lock:
            # Only requests that cannot start at once count against --max-queue: those past the free rows.
            beams = request.params.num_beams > 1
            if self._queued_requests(extra=None if beams else request) + beams > self.max_queue:
                raise QueueFull
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += sum(len(p) for p in request.prompts)
            if self.metrics is not None:
                self.metrics.submitted(request)
            if beams:
                self.exclusive.append(request)
            else:
                self.waiting.extend(request.choices)
            self.lock.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "active_rows": len(self.active),
                "waiting_rows": len(self.waiting),
                "queued_requests": self._queued_requests(),
                **self.stats,
            }

    def _queued_requests(self, extra: GenRequest | None = None) -> int:
        """Requests waiting for a row (beyond those the free rows take next), counting `extra` as if submitted."""
        rows = list(self.waiting) + (extra.choices if extra is not None else [])
        free = max(self.max_batch - len(self.active), 0)
        return len({id(c.request) for c in rows[free:]}) + len(self.exclusive)

    # -- the loop --
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self.lock:
                    while not self._stop and not self.active and not self.waiting and not self.exclusive:
                        self.lock.wait(timeout=1.0)
                    if self._stop:
                        break
                    beam = self.exclusive.popleft() if self.exclusive and not self.active else None
                    # A waiting beam request stops admissions, so the batch drains and it gets its turn.
                    admitted = [] if self.exclusive or beam else self._take_admissible()
                try:
                    if beam is not None:
                        self._run_beam(beam)
                        continue
                    if admitted:
                        self._prefill(admitted)
                    if self.active:
                        self._decode_step()
                except Exception as e:  # never let one bad batch take the server down
                    log.exception("generation failed")
                    for c in self.active + admitted + (beam.choices if beam else []):
                        if c.finish_reason is None:
                            c.finish_reason = "error"
                            c.request.emit(("error", f"generation failed: {type(e).__name__}: {e}"))
                    self.active, self.cache = [], None

    def _take_admissible(self) -> list[Choice]:
        """Pop waiting choices that fit: free rows, and a cache width (longest row + most steps left) within context."""
        admitted: list[Choice] = []
        rows = list(self.active)
        while self.waiting and len(rows) < self.max_batch:
            c = self.waiting[0]
            if c.request.cancelled:
                self.waiting.popleft()
                continue
            trial = [r for r in rows + [c] if not r.score_only]  # scored-only rows never enter the cache
            if trial and max(len(r.tokens) for r in trial) + max(r.steps_left for r in trial) > self.config.n_positions:
                break  # joining now would overflow the cache; it joins once longer rows finish
            self.waiting.popleft()
            admitted.append(c)
            rows.append(c)
        return admitted

    def _start_text(self, c: Choice) -> None:
        c.stream = TextStream(self.tokenizer, c.request.params.stop, context=c.prompt_ids[-PROMPT_CONTEXT:])

    def _prefill(self, new: list[Choice]) -> None:
        """Run the new prompts as one left-padded batch, pick their first tokens, and splice them into the batch."""
        if scored := [c for c in new if c.request.echo_logprobs]:
            self._score_prompts(scored)
            if not (new := [c for c in new if not c.score_only]):
                return
        for c in new:
            self._start_text(c)
        ids, mask = left_pad([c.prompt_ids for c in new])
        device = self.model.device
        first = prefill(self.model, ids.to(device), mask.to(device), capacity=ids.shape[1])
        self._advance(new, first.logits)
        keep = [i for i, c in enumerate(new) if c.finish_reason is None]
        if keep:
            rows = [(self.cache, i, c) for i, c in enumerate(self.active)] + [(first.cache, i, new[i]) for i in keep]
            self._splice(rows)

    def _score_prompts(self, rows: list[Choice]) -> None:
        """Score the prompts of rows that echo log-probabilities in one forward; rows that generate at most one token
        take it from the same logits and are done (what lm-eval's scoring requests ask)."""
        top_k = max(c.request.logprobs for c in rows)
        scores, next_logits = score_with_next(self.model, [c.prompt_ids for c in rows], top_k=top_k)
        for c, s in zip(rows, scores):
            if s.top is not None and c.request.logprobs < top_k:
                s.top = [t[: c.request.logprobs] for t in s.top]
            c.prompt_scores = s
        for c in rows:
            if c.score_only:
                self._start_text(c)
        done = [c for c in rows if c.score_only and c.steps_left <= 0]
        for c in done:
            self._finish(c, "cancelled" if c.request.cancelled else "length")
        one = [i for i, c in enumerate(rows) if c.score_only and c.steps_left > 0]
        if one:
            self._advance([rows[i] for i in one], next_logits[one])

    def _splice(self, rows: list[tuple[KVCache | None, int, Choice]]) -> None:
        """Build a fresh cache holding `rows` (source cache, row in it, choice), right-aligned and tightly packed."""
        cached = [len(c.tokens) - 1 for _, _, c in rows]  # the last sampled token is fed by the next step
        capacity = max(cached) + max(c.steps_left for _, _, c in rows)
        sources = [(src, j, n) for (src, j, _), n in zip(rows, cached)]
        self.cache = KVCache.splice(self.config, sources, capacity, self.model.device, self.model.dtype)
        self.active = [c for _, _, c in rows]
        self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))

    def _decode_step(self) -> None:
        cache, rows = self.cache, self.active
        device = self.model.device
        ids = torch.tensor([[c.tokens[-1]] for c in rows], device=device)
        positions = torch.tensor([[len(c.tokens) - 1] for c in rows], device=device)
        mask = torch.cat(
            [cache.key_mask[:, : cache.length], torch.ones(len(rows), 1, dtype=torch.bool, device=device)], 1
        )
        out = self.model(ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)
        self.stats["steps"] += 1
        self.stats["rows_decoded"] += len(rows)
        self._advance(rows, out.logits[:, -1])
        keep = [i for i, c in enumerate(rows) if c.finish_reason is None]
        if len(keep) < len(rows):
            if keep:
                cache.reorder(torch.tensor(keep, device=device))
                self.active = [rows[i] for i in keep]
            else:
                self.active, self.cache = [], None

    def _advance(self, rows: list[Choice], logits: torch.Tensor) -> None:
        """Choose each row's next token, update its text, and finish rows that hit a stop, the limit, or a cancel."""
        params = [c.request.params for c in rows]
        history = (None, None)
        if any(p.needs_history for p in params):
            ids, mask = left_pad([c.tokens for c in rows])
            history = (ids.to(logits.device), mask.to(logits.device))
        scored = [i for i, c in enumerate(rows) if c.request.logprobs is not None]
        if scored:  # of the model's own distribution at temperature 1, whatever the sampling settings
            logp = torch.log_softmax(logits[scored].float(), dim=-1)
            top_k = max(rows[i].request.logprobs for i in scored)
            top = logp.topk(top_k, dim=-1) if top_k else None
        tokens = sample(logits, params, *history, generator=[c.generator for c in rows]).tolist()
        for b, (c, p, token) in enumerate(zip(rows, params, tokens)):
            if c.request.cancelled:
                self._finish(c, "cancelled")
                continue
            if c.request.logprobs is not None:
                j, k = scored.index(b), c.request.logprobs
                best = list(zip(top.indices[j, :k].tolist(), top.values[j, :k].tolist())) if top is not None else []
                c.logprobs.append((token, float(logp[j, token]), best))
            c.generated += 1
            self.stats["tokens_generated"] += 1
            if self.metrics is not None:
                self.metrics.token(c)
            if token in p.eos_token_id:  # end of text: the row is done and the token is not text
                self._finish(c, "stop")
                continue
            c.tokens.append(token)
            self._update_text(c)
            if c.finish_reason is None and c.generated >= p.max_new_tokens:
                self._finish(c, "length")

    def _update_text(self, c: Choice) -> None:
        """Re-read the row's completion; finish it at a stop string, else send the text that can no longer change."""
        if c.stream.update(c.tokens[len(c.prompt_ids) :]):
            self._finish(c, "stop")
        elif piece := c.stream.pop_safe():
            c.request.emit(("delta", c.index, piece, len(c.logprobs)))  # the tokens' log-probabilities so far

    def _finish(self, c: Choice, reason: str) -> None:
        c.finish_reason = reason
        if reason == "cancelled":
            if not c.request.counted_cancel:
                c.request.counted_cancel = True
                self.stats["requests_cancelled"] += 1
            return
        rest = c.stream.pop_rest() if c.stream is not None else ""
        c.request.emit(("finish", c.index, rest, reason, c.generated))

    def _run_beam(self, request: GenRequest) -> None:
        """Beam search for one request, on its own between steps of the batch (its beams are a batch already)."""
        if request.cancelled:  # the client left while it waited
            self._finish(request.choices[0], "cancelled")
            return
        p = request.params
        n = len(request.choices) // len(request.prompts)
        ids, mask = left_pad(request.prompts)
        width = ids.shape[1]
        out = generate(
            self.model,
            ids,
            mask,
            max_new_tokens=p.max_new_tokens,
            num_beams=p.num_beams,
            num_return_sequences=n,
            repetition_penalty=p.repetition_penalty,
            eos_token_id=list(p.eos_token_id) or None,
            return_dict_in_generate=True,
        )
        for c in request.choices:
            if request.cancelled:
                self._finish(c, "cancelled")
                continue
            self._start_text(c)
            c.generated = int(out.num_generated[c.index])
            new = out.sequences[c.index, width : width + c.generated].tolist()
            ended = bool(new) and new[-1] in p.eos_token_id  # the hypothesis closed with end-of-text
            c.tokens = c.prompt_ids + (new[:-1] if ended else new)
            self.stats["tokens_generated"] += c.generated
            if self.metrics is not None:
                self.metrics.token(c)
            self._update_text(c)  # cuts at a stop string (beam search itself does not know them)
            if c.finish_reason is None:
                self._finish(c, "stop" if ended else "length")
