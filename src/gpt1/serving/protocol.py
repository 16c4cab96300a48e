"""What `gpt1 serve` accepts and answers: OpenAI's completions request schema, its error body, and the checks (one
sentence naming the field) that turn a request into prompts and one `SamplingParams` record."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gpt1.inference.sampling import SamplingParams

__all__ = [
    "BadRequest",
    "CompletionRequest",
    "DetokenizeRequest",
    "RequestShape",
    "StreamOptions",
    "TokenizeRequest",
    "check_prompt_ids",
    "check_request",
    "check_token_ids",
    "choice_logprobs",
    "completion_logprobs",
    "covered_tokens",
    "error_response",
    "ignored_fields",
    "not_served",
    "sampling_params",
    "token_string",
    "validation_message",
]

MAX_STOP = 16  # OpenAI allows 4; lm-eval's generate_until sends a task's `until` list plus the end-of-text token
MAX_STOP_CHARS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_N = 16  # completions per request (n × number of prompts)
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
MAX_LOGPROBS = 20  # top entries per position (OpenAI allows 5, vLLM 20 by default); a top-k is cheap
# Fields other servers (vLLM) take that would change the result: refused unless neutral. Any other unknown field is
# accepted and ignored with a warning in the log, as vLLM does, so that clients sending extras keep working.
EXTRA_NEUTRAL = {
    "min_p": 0.0,
    "min_tokens": 0,
    "stop_token_ids": [],
    "prompt_logprobs": None,
    "logits_processors": None,
    "truncate_prompt_tokens": None,
    "allowed_token_ids": None,
    "bad_words": [],
    "length_penalty": 1.0,
    "guided_json": None,
    "guided_regex": None,
    "guided_choice": None,
    "guided_grammar": None,
    "response_format": None,
    "include_stop_str_in_output": False,
    "use_beam_search": False,
    "return_tokens_as_token_ids": False,
}


# ---- the request schema -------------------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """OpenAI's `/v1/completions` body, plus `top_k`, `repetition_penalty` and `num_beams`; wrong types are rejected,
    unknown fields kept in `model_extra` (see `ignored_fields`)."""

    model_config = ConfigDict(strict=True, extra="allow")

    prompt: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=0)  # 0 (with echo) scores the prompt only
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    echo: bool | None = False
    user: str | None = None
    logprobs: int | None = None  # 0..MAX_LOGPROBS: the chosen tokens' log-probabilities and the top entries
    # Accepted so that OpenAI clients sending their defaults work; anything but the neutral value is refused below.
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


class TokenizeRequest(BaseModel):
    """vLLM's `/tokenize` body (text only); GPT-1 adds no special tokens, so `add_special_tokens` changes nothing."""

    model_config = ConfigDict(strict=True, extra="allow")
    prompt: str
    model: str | None = None
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    """vLLM's `/detokenize` body."""

    model_config = ConfigDict(strict=True, extra="allow")
    tokens: list[int]
    model: str | None = None


# ---- errors ---------------------------------------------------------------------------------------------------------
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


def not_served(name: str, model_name: str) -> BadRequest:
    return BadRequest(
        404, f"model {name!r} is not served here; this server serves {model_name!r}.", "model", "not_found_error"
    )


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
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


# ---- the checks the schema cannot make -------------------------------------------------------------------------------
@dataclass
class RequestShape:
    """A request's prompts (texts or token-id lists, not yet tokenized) and the settings checked so far."""

    prompts: list[str | list[int]]
    n: int
    stop: list[str]
    num_beams: int
    max_tokens: int
    logprobs: int | None = None  # top entries to report per token, or None for no log-probabilities
    echo: bool = False


def check_request(body: CompletionRequest, model_name: str, max_n: int) -> RequestShape:
    """Refuse what the schema lets through but this server does not do (unsupported options, too many completions,
    stop strings past OpenAI's limits, streamed or oversized beam search)."""
    if body.model not in (None, model_name):
        raise not_served(body.model, model_name)
    extras = [(name, value, EXTRA_NEUTRAL[name]) for name, value in (body.model_extra or {}).items()
              if name in EXTRA_NEUTRAL]  # fmt: skip
    for name, value, neutral in (
        *extras,
        ("suffix", body.suffix, None),
        ("presence_penalty", body.presence_penalty, 0.0),
        ("frequency_penalty", body.frequency_penalty, 0.0),
        ("logit_bias", body.logit_bias, {}),
    ):
        if value is not None and value != neutral:
            raise BadRequest(400, f"{name}={json.dumps(value)} is not supported by this server; leave it out.", name)
    n = body.n or 1
    if body.best_of not in (None, n):
        raise BadRequest(400, f"best_of={body.best_of} is not supported; leave it out or set it equal to n.", "best_of")
    prompts = body.prompt
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
        prompts = [prompts]
    if not prompts:
        raise BadRequest(400, "prompt is an empty list: give at least one prompt.", "prompt")
    if n * len(prompts) > max_n:
        raise BadRequest(
            400,
            f"n={n} with {len(prompts)} prompt(s) asks for {n * len(prompts)} completions; "
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
            400, f"n={n} is larger than num_beams={num_beams}; beam search returns at most num_beams sequences.", "n"
        )
    max_tokens = body.max_tokens if body.max_tokens is not None else DEFAULT_MAX_TOKENS
    if max_tokens == 0 and not body.echo:
        raise BadRequest(
            422, "max_tokens=0 generates nothing: use max_tokens >= 1, or echo=true to score the prompt.", "max_tokens"
        )
    if body.logprobs is not None:
        if not 0 <= body.logprobs <= MAX_LOGPROBS:
            raise BadRequest(
                400, f"logprobs={body.logprobs} is out of range; this server reports 0..{MAX_LOGPROBS}.", "logprobs"
            )
        if num_beams > 1:
            raise BadRequest(
                400, f"logprobs cannot be combined with num_beams={num_beams}; use sampling or greedy.", "logprobs"
            )
    return RequestShape(list(prompts), n, stop, num_beams, max_tokens, body.logprobs, bool(body.echo))


def ignored_fields(body: CompletionRequest) -> list[str]:
    """Fields of the request this server does not know and ignores (the caller logs them)."""
    return sorted(name for name in (body.model_extra or {}) if name not in EXTRA_NEUTRAL)


def check_token_ids(ids: Sequence[int], vocab_size: int) -> None:
    """Refuse a token-id prompt with an id outside the vocabulary."""
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise BadRequest(
            400, f"prompt has token id {bad}, outside this model's vocabulary 0..{vocab_size - 1}.", "prompt"
        )


def check_prompt_ids(ids: Sequence[int], n_positions: int, max_tokens: int) -> None:
    """Refuse an empty prompt, or one that leaves no room for `max_tokens` in the context."""
    if not ids:
        raise BadRequest(400, "prompt is empty (no tokens): GPT-1 has no start token to continue from.", "prompt")
    if max_tokens == 0 and len(ids) > n_positions:  # scoring only: the whole context is the prompt's
        raise BadRequest(
            400,
            f"prompt is {len(ids)} tokens, longer than this model's context of {n_positions}; shorten it.",
            "prompt",
        )
    if max_tokens > 0 and len(ids) >= n_positions:
        raise BadRequest(
            400,
            f"prompt is {len(ids)} tokens, but this model's context is {n_positions} "
            f"tokens (and at least one is needed for the completion); shorten it.",
            "prompt",
        )
    if len(ids) + max_tokens > n_positions:
        raise BadRequest(
            400,
            f"max_tokens={max_tokens} plus the prompt's {len(ids)} tokens exceeds this "
            f"model's context of {n_positions} tokens; use max_tokens <= {n_positions - len(ids)}.",
            "max_tokens",
        )


def sampling_params(body: CompletionRequest, shape: RequestShape, eos_ids: Sequence[int]) -> SamplingParams:
    """The record every row of the request is generated with (temperature 0 is greedy; beams never sample)."""
    return SamplingParams(
        max_new_tokens=max(shape.max_tokens, 1),  # 0 (scoring the prompt only) is the engine's to honour
        do_sample=shape.num_beams == 1,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_k=body.top_k or None,
        top_p=body.top_p,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        num_beams=shape.num_beams,
        stop=tuple(shape.stop),
        seed=body.seed,
        eos_token_id=() if body.ignore_eos else tuple(eos_ids),
    )


# ---- log-probabilities in the response -------------------------------------------------------------------------------
def token_string(tokenizer, token_id: int) -> str:
    """A token as `logprobs` names it: its BPE vocabulary entry ("the</w>"; one string per id, so `top_logprobs` keys
    are unique and match `tokens`), a special token's own text, or "<|id:N|>" for an id the tokenizer lacks."""
    try:
        return tokenizer.id_to_token(int(token_id))
    except (KeyError, IndexError):
        return f"<|id:{int(token_id)}|>"


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0  # JSON has no -inf; OpenAI clients expect numbers


def text_offsets(tokenizer, ids: Sequence[int], limit: int) -> list[int]:
    """Where each token's text starts in `tokenizer.decode(ids)`, each at most `limit` (the returned text's length).

    The decoded text is the tokens' pieces joined (end-of-word marks as spaces), stripped and cleaned up (spaces
    before punctuation dropped), so aligning it with the raw join maps each piece's start; where that alignment
    fails (special tokens), the length of each prefix's own decoding is used instead."""
    pieces = [tokenizer.id_to_token(int(t)).replace("</w>", " ") if int(t) < len(tokenizer.encoder) else None
              for t in ids]  # fmt: skip
    full = tokenizer.decode(ids)
    if None not in pieces:
        raw = "".join(pieces)
        starts, pos = [], 0
        for p in pieces:
            starts.append(pos)
            pos += len(p)
        lead = len(raw) - len(raw.lstrip())
        where = [0] * (len(raw) + 1)  # raw index -> index in `full`
        j = 0
        for i, ch in enumerate(raw):
            where[i] = j
            if i >= lead and j < len(full) and full[j] == ch:
                j += 1
        where[len(raw)] = j
        if j == len(full):
            return [min(where[s], limit) for s in starts]
    return [min(len(tokenizer.decode(ids[:i])), limit) for i in range(len(ids))]


def completion_logprobs(
    tokenizer,
    entries: Sequence[tuple[int, float | None, Sequence[tuple[int, float]] | None]],
    offsets: Sequence[int],
) -> dict:
    """OpenAI's legacy `logprobs` object from (token id, its log-probability or None, top (id, logprob) or None) per
    token: `tokens`, `token_logprobs`, `top_logprobs` (token string -> logprob; the chosen token is always in it, as
    vLLM does) and `text_offset`."""
    tokens, token_logprobs, top_logprobs = [], [], []
    for token, lp, top in entries:
        name = token_string(tokenizer, token)
        tokens.append(name)
        token_logprobs.append(None if lp is None else _finite(lp))
        if lp is None:
            top_logprobs.append(None)
        else:
            d = {token_string(tokenizer, t): _finite(v) for t, v in (top or ())}
            d.setdefault(name, _finite(lp))
            top_logprobs.append(d)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": list(offsets),
    }


def choice_logprobs(
    tokenizer,
    generated: Sequence[tuple[int, float, Sequence[tuple[int, float]]]],
    completion_len: int,
    *,
    base: int = 0,
    start: int = 0,
    prompt=None,
    prompt_len: int = 0,
    lead: int = 0,
) -> dict:
    """One choice's `logprobs`: the echoed prompt's tokens (`prompt`, a `TokenScores`, its text `prompt_len` long)
    then the generated tokens from `start` on (a stream sends them chunk by chunk); `base` is where the completion's
    text starts in the returned text, `completion_len` its length so far and `lead` the spaces it starts with."""
    entries: list = []
    offsets: list[int] = []
    if prompt is not None:
        tops = prompt.top if prompt.top is not None else [()] * len(prompt.ids)
        entries += list(zip(prompt.ids, prompt.logprobs, tops))
        offsets += text_offsets(tokenizer, prompt.ids, prompt_len)
    if len(generated) > start:
        entries += list(generated[start:])
        ids = [g[0] for g in generated]
        offsets += [base + lead + o for o in text_offsets(tokenizer, ids, completion_len - lead)[start:]]
    return completion_logprobs(tokenizer, entries, offsets)


def covered_tokens(tokenizer, new: Sequence[tuple], done: Sequence[tuple], text: str) -> int:
    """How many of the generated tokens `new` (after `done`) have their whole text in `text`, the completion streamed
    so far: a stream sends a token's log-probability with the chunk that completes its text."""
    ids = [int(g[0]) for g in (*done, *new)]
    full = tokenizer.decode(ids)
    starts = text_offsets(tokenizer, ids, len(full))
    covered, n = len(text.lstrip()), 0
    for i in range(len(done), len(ids)):
        end = starts[i + 1] if i + 1 < len(ids) else len(full)
        while end > starts[i] and full[end - 1].isspace():  # the space before the next word is not this token's
            end -= 1
        if end > covered:
            break
        n += 1
    return n
