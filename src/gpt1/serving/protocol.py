"""What `gpt1 serve` accepts and answers: OpenAI's completions request schema, its error body, and the checks (one
sentence naming the field) that turn a request into prompts and one `SamplingParams` record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gpt1.inference.sampling import SamplingParams

__all__ = [
    "BadRequest",
    "CompletionRequest",
    "RequestShape",
    "StreamOptions",
    "check_prompt_ids",
    "check_request",
    "check_token_ids",
    "error_response",
    "not_served",
    "sampling_params",
    "validation_message",
]

MAX_STOP = 4  # OpenAI's limit on stop strings
MAX_STOP_CHARS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_N = 16  # completions per request (n × number of prompts)
DEFAULT_MAX_TOKENS = 16  # OpenAI's default


# ---- the request schema -------------------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """OpenAI's `/v1/completions` body, plus `top_k`, `repetition_penalty` and `num_beams`; wrong types are rejected."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
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


def check_request(body: CompletionRequest, model_name: str, max_n: int) -> RequestShape:
    """Refuse what the schema lets through but this server does not do (unsupported options, too many completions,
    stop strings past OpenAI's limits, streamed or oversized beam search)."""
    if body.model not in (None, model_name):
        raise not_served(body.model, model_name)
    for name, value, neutral in (
        ("logprobs", body.logprobs, None),
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
    return RequestShape(list(prompts), n, stop, num_beams, max_tokens)


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
    if len(ids) >= n_positions:
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
        max_new_tokens=shape.max_tokens,
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
