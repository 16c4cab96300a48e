"""`gpt1 serve`: an OpenAI-compatible completions API (with server-sent-event streaming) and the web playground.

One engine thread owns the model and runs continuous batching on the KV cache: each step it prefills newly admitted
prompts in a batch of their own, splices their keys and values into the running batch (rows right-aligned, left
padding masked), then decodes one token for every row. Every row has its own sampling settings, random generator,
stop strings and text, so requests never see each other's tokens. The HTTP side (FastAPI on uvicorn) only validates,
tokenizes, queues and relays events; it never touches the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gpt1.inference.generate import apply_repetition_penalty, apply_temperature
from gpt1.model.gpt import GPT, KVCache

__all__ = ["CompletionRequest", "Engine", "SamplingParams", "create_app", "serve", "token_distribution"]

log = logging.getLogger("gpt1.serving.app")

MAX_STOP = 4  # OpenAI's limit on stop strings
MAX_STOP_CHARS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_N = 16  # completions per request (n × number of prompts)
_CANDIDATES = 256  # top-k / top-p look at this many most likely tokens first (exactly; see `choose_token`)


# ---- the request schema -------------------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """OpenAI's `/v1/completions` body, plus `top_k`, `repetition_penalty` and `num_beams`; wrong types are rejected."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    max_tokens: int | None = Field(16, ge=1)
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    echo: bool | None = False
    user: str | None = None
    # Accepted so that OpenAI clients sending their defaults work; anything but the neutral value is refused below.
    logprobs: int | None = None
    best_of: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None
    # Extensions (HF generate's names; `ignore_eos` as vLLM names it).
    top_k: int | None = Field(0, ge=0)  # 0 = off, the same rule as `gpt1 generate --top-k 0`
    repetition_penalty: float | None = Field(1.0, gt=0.0, le=10.0)
    num_beams: int | None = Field(1, ge=1, le=16)
    ignore_eos: bool | None = False  # keep generating past the model's end-of-text token


class BadRequest(Exception):
    """A request the server refuses: HTTP status, one-sentence message and the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict | None = None,
) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}}, status, headers=headers
    )


# ---- what the engine works on ---------------------------------------------------------------------------------
@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    eos_ids: tuple[
        int, ...
    ] = ()  # end-of-text ids: a row that samples one finishes with "stop", the id not in its text


@dataclass
class Choice:
    """One sequence being generated: a row of the batch while active."""

    request: GenRequest
    index: int
    prompt_ids: list[int]
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)  # prompt + generated
    generated: int = 0
    emitted: str = ""  # completion text already sent
    text: str = ""  # completion text so far (cut at a stop string when one appears)
    finish_reason: str | None = None
    prompt_text: str = ""  # decoded tail of the prompt: completion text = decode(tail + generated) minus this
    prompt_tail: list[int] = field(default_factory=list)

    @property
    def steps_left(self) -> int:
        return self.request.params.max_tokens - self.generated


class GenRequest:
    """A submitted request: its choices, and the asyncio queue its events go to (filled from the engine thread)."""

    def __init__(
        self, prompts: list[list[int]], params: SamplingParams, n: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.params = params
        self.loop = loop
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


# ---- the engine -------------------------------------------------------------------------------------------------
class Engine:
    """Continuous batching over `model` in a background thread; at most `max_batch` rows decode together."""

    def __init__(self, model: GPT, tokenizer, max_batch: int = 8, max_queue: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}.")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more; got {max_queue}.")
        self.model = model.eval()
        model.use_decode_layout()
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.waiting: deque[Choice] = deque()
        self.exclusive: deque[GenRequest] = deque()  # beam-search requests, run on their own between steps
        self.active: list[Choice] = []
        self.cache: KVCache | None = None
        self.lock = threading.Condition()
        # steps: decode steps; rows_decoded: rows summed over them (their ratio is the mean batch size).
        self.stats = {
            "requests": 0,
            "requests_cancelled": 0,
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
            if request.params.num_beams > 1:
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
                    for c in self.active + admitted + ([c for c in beam.choices] if beam else []):
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
            trial = rows + [c]
            if max(len(r.tokens) for r in trial) + max(r.steps_left for r in trial) > self.config.n_positions:
                break  # joining now would overflow the cache; it joins once longer rows finish
            self.waiting.popleft()
            admitted.append(c)
            rows.append(c)
        return admitted

    def _prefill(self, new: list[Choice]) -> None:
        """Run the new prompts as one left-padded batch, pick their first tokens, and splice them into the batch."""
        device, dtype = self.model.device, self.model.dtype
        width = max(len(c.prompt_ids) for c in new)
        ids = torch.zeros(len(new), width, dtype=torch.long)
        mask = torch.zeros(len(new), width, dtype=torch.long)
        for i, c in enumerate(new):
            ids[i, width - len(c.prompt_ids) :] = torch.tensor(c.prompt_ids)
            mask[i, width - len(c.prompt_ids) :] = 1
            c.prompt_tail = c.prompt_ids[-64:]  # clean-up of decoded text is local, so a tail decodes the join
            c.prompt_text = self.tokenizer.decode(c.prompt_tail)
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = KVCache(self.config, len(new), width, device, dtype)
        out = self.model(ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)
        self._advance(new, out.logits[:, -1])
        keep = [i for i, c in enumerate(new) if c.finish_reason is None]
        if keep:
            self._splice([(self.cache, i, c) for i, c in enumerate(self.active)] + [(cache, i, new[i]) for i in keep])

    def _splice(self, rows: list[tuple[KVCache | None, int, Choice]]) -> None:
        """Build a fresh cache holding `rows` (source cache, row in it, choice), right-aligned and tightly packed."""
        device, dtype = self.model.device, self.model.dtype
        cached = [len(c.tokens) - 1 for _, _, c in rows]  # the last sampled token is fed by the next step
        length = max(cached)
        capacity = length + max(c.steps_left for _, _, c in rows)
        cache = KVCache(self.config, len(rows), capacity, device, dtype)
        cache.key_mask = torch.zeros(len(rows), capacity, dtype=torch.bool, device=device)
        for i, ((src, j, _), n) in enumerate(zip(rows, cached)):
            for layer in range(self.config.n_layer):
                cache.keys[layer][i, :, length - n : length] = src.keys[layer][j, :, src.length - n : src.length]
                cache.values[layer][i, :, length - n : length] = src.values[layer][j, :, src.length - n : src.length]
            cache.key_mask[i, length - n : length] = True
        cache.length = length
        self.cache = cache
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
        plain_greedy = [c.request.params.temperature == 0 and c.request.params.repetition_penalty == 1.0 for c in rows]
        argmax = logits.argmax(-1).tolist() if any(plain_greedy) else []  # one call for all such rows
        for i, c in enumerate(rows):
            if c.request.cancelled:
                self._finish(c, "cancelled")
                continue
            if plain_greedy[i]:
                token = argmax[i]
            else:
                token = choose_token(logits[i], c.tokens, c.request.params, c.generator)
            c.generated += 1
            self.stats["tokens_generated"] += 1
            if token in c.request.params.eos_ids:  # end of text: the row is done and the token is not text
                self._finish(c, "stop")
                continue
            c.tokens.append(token)
            self._update_text(c)
            if c.finish_reason is None and c.generated >= c.request.params.max_tokens:
                self._finish(c, "length")

    def _update_text(self, c: Choice) -> None:
        """Re-decode the row's completion, cut it at a stop string, and send the part of it that can no longer change."""
        c.text = completion_text(self.tokenizer.decode(c.prompt_tail + c.tokens[len(c.prompt_ids) :]), c.prompt_text)
        stops = c.request.params.stop
        hits = [i for i in (c.text.find(s) for s in stops) if i >= 0]
        if hits:
            c.text = c.text[: min(hits)]
            self._finish(c, "stop")
            return
        # Send only text that cannot change: the last word may still grow or lose the space before it to clean-up,
        # and a tail that starts a stop string may turn out to be one.
        stable = c.text[: max(c.text.rfind(" "), 0)]
        stable = stable[: len(stable) - _stop_prefix_overlap(stable, stops)]
        if len(stable) > len(c.emitted) and stable.startswith(c.emitted):
            c.request.emit(("delta", c.index, stable[len(c.emitted) :]))
            c.emitted = stable

    def _finish(self, c: Choice, reason: str) -> None:
        c.finish_reason = reason
        if reason == "cancelled":
            if not c.request.counted_cancel:
                c.request.counted_cancel = True
                self.stats["requests_cancelled"] += 1
            return
        rest = c.text[len(c.emitted) :] if c.text.startswith(c.emitted) else ""
        if not c.text.startswith(c.emitted):
            log.warning("completion text changed after it was streamed (request %s)", c.request.id)
        c.emitted += rest
        c.request.emit(("finish", c.index, rest, reason, c.generated))

    def _run_beam(self, request: GenRequest) -> None:
        """Beam search for one request, on its own between steps of the batch (its beams are a batch already)."""
        from gpt1.inference.generate import generate  # only beam requests need it

        if request.cancelled:  # the client left while it waited
            self._finish(request.choices[0], "cancelled")
            return
        p = request.params
        n = len(request.choices) // len(request.prompts)
        width = max(len(ids) for ids in request.prompts)
        ids = torch.zeros(len(request.prompts), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(request.prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        out = generate(
            self.model,
            ids,
            mask,
            max_new_tokens=p.max_tokens,
            num_beams=p.num_beams,
            num_return_sequences=n,
            repetition_penalty=p.repetition_penalty,
            eos_token_id=list(p.eos_ids) or None,
            return_dict_in_generate=True,
        )
        for c in request.choices:
            if request.cancelled:
                self._finish(c, "cancelled")
                continue
            c.prompt_tail = c.prompt_ids[-64:]
            c.prompt_text = self.tokenizer.decode(c.prompt_tail)
            c.generated = int(out.num_generated[c.index])
            new = out.sequences[c.index, width : width + c.generated].tolist()
            ended = bool(new) and new[-1] in p.eos_ids  # the hypothesis closed with end-of-text
            c.tokens = c.prompt_ids + (new[:-1] if ended else new)
            self.stats["tokens_generated"] += c.generated
            self._update_text(c)  # cuts at a stop string (beam search itself does not know them)
            if c.finish_reason is None:
                self._finish(c, "stop" if ended else "length")


def choose_token(logits: torch.Tensor, history: list[int], p: SamplingParams, generator: torch.Generator) -> int:
    """Next token for one row: the argmax when greedy, else a draw from `token_distribution` with the row's generator."""
    index, probs = token_distribution(logits, history, p)
    if index.numel() == 1:
        return int(index[0])
    return int(index[int(torch.multinomial(probs.cpu(), 1, generator=generator))])


def token_distribution(
    logits: torch.Tensor, history: list[int], p: SamplingParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, probabilities) the next token is drawn from: repetition penalty, temperature, top-k, top-p.

    The same rules and order as HF generate's logits processors (repetition penalty and temperature are
    `gpt1.inference.generate`'s), applied per row so each request keeps its own. Top-k and top-p work on the few hundred
    most likely tokens whenever that is provably the same as the full vocabulary (sorting 40k logits every step
    costs more than the model's forward pass for small models).
    """
    logits = logits.float()
    if p.repetition_penalty != 1.0:
        seen = torch.tensor([history], device=logits.device)
        logits = apply_repetition_penalty(logits.view(1, -1), seen, p.repetition_penalty).view(-1)
    if p.temperature == 0:
        return logits.argmax().view(1), torch.ones(1)
    logits = apply_temperature(logits, p.temperature)
    vocab = logits.numel()
    k = p.top_k if 0 < p.top_k < vocab else vocab
    if k == vocab and p.top_p >= 1.0:
        return torch.arange(vocab, device=logits.device), logits.softmax(-1)
    values, index = torch.topk(logits, min(k, _CANDIDATES))  # most likely first
    if k <= _CANDIDATES:
        norm = torch.logsumexp(values, -1)  # top-k survivors are all here
    else:
        norm = torch.logsumexp(torch.topk(logits, k).values if k < vocab else logits, -1)
        covered = float(torch.logsumexp(values, -1) - norm)  # log of the candidates' share of the mass
        if p.top_p >= 1.0 or covered < math.log(p.top_p):  # the nucleus may reach past the candidates: go exact
            values, index = torch.topk(logits, k)
    if p.top_p < 1.0:
        probs = (values - norm).exp()
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens; HF drops a token once that is >= top_p
        keep = int((before < p.top_p).sum().clamp(min=1))
        values, index = values[:keep], index[:keep]
    return index, values.softmax(-1)


def completion_text(full: str, prompt_text: str) -> str:
    """The part of `full` (prompt tail + completion, decoded together) after the prompt's own text."""
    if full.startswith(prompt_text):
        return full[len(prompt_text) :]
    # Clean-up joined the two (e.g. the prompt ended with " '"): cut where they stop agreeing.
    n = 0
    while n < min(len(full), len(prompt_text)) and full[n] == prompt_text[n]:
        n += 1
    return full[n:]


def _stop_prefix_overlap(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (held back until we know)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


# ---- HTTP ------------------------------------------------------------------------------------------------------
class _BodyLimit:
    """ASGI middleware: answer 413 to request bodies over `limit` bytes (declared or streamed) before parsing them."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then pass through, so disconnects are still seen

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(
            413, f"request body is larger than this server's limit of {self.limit} bytes.", "body"
        )
        await response(scope, receive, send)


def _validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One sentence (and the field) for pydantic's errors about a request body."""
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))}).", None
    if not loc:
        return f"request body: {first.get('msg')}; send a JSON object.", None
    param = loc[0]
    if param == "prompt" and first.get("type") != "missing":
        return "prompt must be a string, a list of strings, a list of token ids, or a list of such lists.", "prompt"
    if param == "stop" and first.get("type") != "missing":
        return "stop must be a string, a list of strings, or null.", "stop"
    got = f" (got {json.dumps(first['input'])[:80]})" if "input" in first and first.get("type") != "missing" else ""
    return f"{'.'.join(loc)}: {first.get('msg')}{got}.", param


def create_app(
    model: GPT,
    tokenizer,
    model_name: str = "gpt1",
    max_batch: int = 8,
    max_queue: int = 64,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_n: int = DEFAULT_MAX_N,
    eos_token_id: int | list[int] | None = None,
) -> FastAPI:
    """The ASGI app: `/v1/completions`, `/v1/models`, `/health` and the playground at `/`, over one `Engine`.

    Completions stop at `eos_token_id` (default: the id a fine-tuned run saved, `config.extra["eos_token_id"]`, as
    `gpt1 generate` does) unless a request sets `ignore_eos`.
    """
    engine = Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue)
    n_params = model.num_parameters()
    cfg = model.config
    if eos_token_id is None:
        eos_token_id = cfg.extra.get("eos_token_id")
    eos_ids = tuple(
        int(i)
        for i in ([] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
    )
    tokenize_lock = threading.Lock()  # the tokenizer's caches are not meant for concurrent writers

    async def lifespan(app):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="gpt1", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(_BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(list(exc.errors()))
        return error_response(422, message, param)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest):
        return error_response(exc.status, exc.message, exc.param, exc.kind)

    model_card = {
        "id": model_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "gpt1",
        "parameters": n_params,
        "context_length": cfg.n_positions,
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "vocab_size": cfg.vocab_size,
        "eos_token_id": eos_ids[0] if eos_ids else None,
        "default_prompt": default_prompt(cfg),
    }

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        if name != model_name:
            return error_response(
                404,
                f"model {name!r} is not served here; this server serves {model_name!r}.",
                "model",
                "not_found_error",
            )
        return model_card

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": model_name,
            "max_batch": max_batch,
            "max_queue": max_queue,
            **engine.snapshot(),
        }

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(
            resources.files("gpt1.serving").joinpath("static/playground.html").read_text(encoding="utf-8")
        )

    def encode(text: str) -> list[int]:
        with tokenize_lock:
            return tokenizer.encode(text)

    async def prepare(body: CompletionRequest) -> tuple[list[list[int]], list[str], SamplingParams, int]:
        """Check what the schema cannot (lengths against the context, limits) and tokenize the prompts."""
        if body.model not in (None, model_name):
            raise BadRequest(
                404,
                f"model {body.model!r} is not served here; this server serves {model_name!r}.",
                "model",
                "not_found_error",
            )
        for name, value, neutral in (
            ("logprobs", body.logprobs, None),
            ("suffix", body.suffix, None),
            ("presence_penalty", body.presence_penalty, 0.0),
            ("frequency_penalty", body.frequency_penalty, 0.0),
            ("logit_bias", body.logit_bias, {}),
        ):
            if value is not None and value != neutral:
                raise BadRequest(
                    400, f"{name}={json.dumps(value)} is not supported by this server; leave it out.", name
                )
        n = body.n or 1
        if body.best_of not in (None, n):
            raise BadRequest(
                400, f"best_of={body.best_of} is not supported; leave it out or set it equal to n.", "best_of"
            )
        prompt = body.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        if not prompt:
            raise BadRequest(400, "prompt is an empty list: give at least one prompt.", "prompt")
        if n * len(prompt) > max_n:
            raise BadRequest(
                400,
                f"n={n} with {len(prompt)} prompt(s) asks for {n * len(prompt)} completions; "
                f"this server allows at most {max_n} per request.",
                "n",
            )
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
            raise BadRequest(
                400,
                f"stop must be at most {MAX_STOP} non-empty strings of up to {MAX_STOP_CHARS} "
                f"characters; got {json.dumps(stop)[:120]}.",
                "stop",
            )
        num_beams = body.num_beams or 1
        if num_beams > 1 and body.stream:
            raise BadRequest(
                400,
                f"stream=true cannot be combined with num_beams={num_beams}: beam search only "
                f"knows its best sequences at the end.",
                "num_beams",
            )
        if num_beams > 1 and n > num_beams:
            raise BadRequest(
                400,
                f"n={n} is larger than num_beams={num_beams}; beam search returns at most num_beams sequences.",
                "n",
            )
        max_tokens = body.max_tokens if body.max_tokens is not None else 16
        texts, prompts = [], []
        for p in prompt:
            if isinstance(p, str):
                ids = await run_in_threadpool(encode, p)
                texts.append(p)
            else:
                bad = next((t for t in p if not 0 <= t < cfg.vocab_size), None)
                if bad is not None:
                    raise BadRequest(
                        400,
                        f"prompt has token id {bad}, outside this model's vocabulary 0..{cfg.vocab_size - 1}.",
                        "prompt",
                    )
                ids = list(p)
                texts.append(tokenizer.decode(ids))
            if not ids:
                raise BadRequest(
                    400, "prompt is empty (no tokens): GPT-1 has no start token to continue from.", "prompt"
                )
            if len(ids) >= cfg.n_positions:
                raise BadRequest(
                    400,
                    f"prompt is {len(ids)} tokens, but this model's context is {cfg.n_positions} "
                    f"tokens (and at least one is needed for the completion); shorten it.",
                    "prompt",
                )
            if len(ids) + max_tokens > cfg.n_positions:
                raise BadRequest(
                    400,
                    f"max_tokens={max_tokens} plus the prompt's {len(ids)} tokens exceeds this "
                    f"model's context of {cfg.n_positions} tokens; use max_tokens <= "
                    f"{cfg.n_positions - len(ids)}.",
                    "max_tokens",
                )
            prompts.append(ids)
        temperature = 1.0 if body.temperature is None else body.temperature
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=body.top_k or 0,
            top_p=1.0 if body.top_p is None else body.top_p,
            repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
            num_beams=num_beams,
            stop=tuple(stop),
            seed=body.seed,
            eos_ids=() if body.ignore_eos else eos_ids,
        )
        return prompts, texts, params, n

    def chunk(req: GenRequest, choices: list[dict], usage: dict | None = None) -> str:
        body = {
            "id": req.id,
            "object": "text_completion",
            "created": req.created,
            "model": model_name,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def usage_of(req: GenRequest) -> dict:
        prompt_tokens = sum(len(p) for p in req.prompts)
        completion_tokens = sum(c.generated for c in req.choices)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        prompts, texts, params, n = await prepare(body)
        req = GenRequest(prompts, params, n, asyncio.get_running_loop())
        try:
            engine.submit(req)
        except QueueFull:
            return error_response(
                503,
                f"the server is busy: {max_queue} requests are already waiting (--max-queue); retry shortly.",
                None,
                "server_busy",
                headers={"Retry-After": "1"},
            )
        prefixes = [texts[c.index // n] if body.echo else "" for c in req.choices]
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(req, prefixes, include_usage, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _collect(req, prefixes, request)

    async def _watch_disconnect(request: Request, req: GenRequest) -> None:
        """Cancel `req` when its client hangs up (uvicorn drops what is sent to a closed connection silently)."""
        while (await request.receive())["type"] != "http.disconnect":
            pass
        req.cancel()
        req.events.put_nowait(("disconnect",))

    async def _stream(req: GenRequest, prefixes: list[str], include_usage: bool, request: Request):
        watcher = asyncio.ensure_future(_watch_disconnect(request, req))
        try:
            for c in req.choices:
                if prefixes[c.index]:
                    yield chunk(
                        req, [{"text": prefixes[c.index], "index": c.index, "logprobs": None, "finish_reason": None}]
                    )
            remaining = len(req.choices)
            while remaining:
                event = await req.events.get()
                if event[0] == "disconnect":
                    return
                if event[0] == "error":
                    yield f"data: {json.dumps({'error': {'message': event[1], 'type': 'server_error'}})}\n\n"
                    return
                if event[0] == "delta":
                    yield chunk(req, [{"text": event[2], "index": event[1], "logprobs": None, "finish_reason": None}])
                else:
                    remaining -= 1
                    yield chunk(
                        req, [{"text": event[2], "index": event[1], "logprobs": None, "finish_reason": event[3]}]
                    )
            if include_usage:
                yield chunk(req, [], usage_of(req))
            yield "data: [DONE]\n\n"
        finally:
            watcher.cancel()
            req.cancel()  # a no-op when finished; when the client went away, the engine drops its rows

    async def _collect(req: GenRequest, prefixes: list[str], request: Request):
        async def wait_all() -> str | None:
            remaining = len(req.choices)
            while remaining:
                event = await req.events.get()
                if event[0] == "disconnect":
                    return "disconnected"
                if event[0] == "error":
                    return event[1]
                remaining -= event[0] == "finish"
            return None

        watcher = asyncio.ensure_future(_watch_disconnect(request, req))
        try:
            failure = await wait_all()
        finally:
            watcher.cancel()
            req.cancel()
        if failure == "disconnected":
            return Response(status_code=499)  # nobody is listening; the engine has dropped the request's rows
        if failure:
            return error_response(500, failure, None, "server_error")
        return {
            "id": req.id,
            "object": "text_completion",
            "created": req.created,
            "model": model_name,
            "choices": [
                {
                    "text": prefixes[c.index] + c.text,
                    "index": c.index,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in req.choices
            ],
            "usage": usage_of(req),
        }

    return app


def default_prompt(config) -> str | None:
    """The playground's starting prompt: what a fine-tuned run's template puts before the text ("JOKE:"), if any."""
    template = config.extra.get("lm_template") or ""
    prefix = template.split("{text}", 1)[0].strip() if "{text}" in template else ""
    return prefix or None


def check_port(host: str, port: int) -> None:
    """Refuse a host:port this process cannot listen on (busy, privileged, not this machine's) with one sentence."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: cannot be resolved ({e.strerror}).") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"--port {port}: {host}:{port} is already in use (another server?); pick another --port."
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"--host {host}: not an address of this machine; use 127.0.0.1 or 0.0.0.0.") from None
            raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}).") from None


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 8,
    max_queue: int = 64,
    tokenizer: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    name: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
) -> None:
    """Load `model_path` (a model dir, hub id or `preset:NAME` with random weights) and serve it until interrupted."""
    import uvicorn

    from gpt1.cli.verbs import load_tokenizer_for
    from gpt1.config import GPT1Config

    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is out of range; use 0..65535.")
    if max_batch < 1:
        raise ValueError(f"--max-batch {max_batch} is too small; use 1 or more.")
    if max_queue < 0:
        raise ValueError(f"--max-queue {max_queue} is negative; use 0 or more.")
    from gpt1.runtime import resolve_device

    device = resolve_device(device)
    check_port(host, port)  # before loading the model, and long before a "listening on" banner
    if str(device).startswith("cpu") and dtype == torch.float16:
        raise ValueError("--dtype float16 is very slow on CPU; use float32 or bfloat16 there.")
    if model_path.startswith("preset:"):
        model = GPT(GPT1Config.from_preset(model_path.split(":", 1)[1])).to(device=device, dtype=dtype)
        tok = load_tokenizer_for(None, tokenizer)
    else:
        model = GPT.from_pretrained(model_path, dtype=dtype, device=device)
        tok = load_tokenizer_for(model_path, tokenizer)
    name = name or (model_path if model_path.startswith("preset:") else Path(model_path.rstrip("/")).name or model_path)
    app = create_app(model, tok, name, max_batch=max_batch, max_queue=max_queue, max_body_bytes=max_body_bytes)
    if not _is_loopback(host):
        log.warning(
            "listening on %s: anyone who can reach this machine can use the API and the playground "
            "(there is no authentication).",
            host,
        )
    print(
        f"gpt1 serve: {name} ({model.num_parameters() / 1e6:.1f}M parameters) on http://{host}:{port}/ "
        f"(API at /v1, max batch {max_batch}, queue {max_queue})",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
