"""`gpt1 serve`: an OpenAI-compatible completions API (with server-sent-event streaming) and the web playground.

The HTTP side (FastAPI on uvicorn) validates (`protocol`), tokenizes, queues and relays events; one `Engine` thread
(`engine`) owns the model and runs continuous batching over `gpt1.inference`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gpt1.inference.sampling import SamplingParams, as_id_tuple
from gpt1.model.gpt import GPT
from gpt1.serving.engine import Engine, GenRequest, QueueFull
from gpt1.serving.metrics import ServerMetrics
from gpt1.serving.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_N,
    BadRequest,
    CompletionRequest,
    check_prompt_ids,
    check_request,
    check_token_ids,
    choice_logprobs,
    covered_tokens,
    error_response,
    ignored_fields,
    not_served,
    sampling_params,
    validation_message,
)
from gpt1.serving.security import add_api_key_check, add_cors, check_api_keys, check_cors_origins
from gpt1.serving.tokenizer_routes import add_tokenizer_routes

__all__ = ["create_app", "default_prompt", "serve"]

log = logging.getLogger("gpt1.serving.app")


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


def create_app(
    model: GPT,
    tokenizer,
    model_name: str = "gpt1",
    max_batch: int = 8,
    max_queue: int = 64,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_n: int = DEFAULT_MAX_N,
    eos_token_id: int | list[int] | None = None,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The ASGI app: `/v1/completions`, `/v1/models`, `/health`, `/metrics` and the playground at `/`, over one
    `Engine`.

    Completions stop at `eos_token_id` (default: the id a fine-tuned run saved, `config.extra["eos_token_id"]`, as
    `gpt1 generate` does) unless a request sets `ignore_eos`. With `api_keys`, every path but `/health` and `/` needs
    one (`gpt1.serving.security`); `cors_origins` lets browser pages from those origins call the API.
    """
    metrics = ServerMetrics()
    engine = Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue, metrics=metrics)
    n_params = model.num_parameters()
    cfg = model.config
    if eos_token_id is None:
        eos_token_id = cfg.extra.get("eos_token_id")
    eos_ids = as_id_tuple(eos_token_id)
    tokenize_lock = threading.Lock()  # the tokenizer's caches are not meant for concurrent writers

    async def lifespan(app):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="gpt1", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    # Outermost last: CORS answers preflights, then every answer is counted (401s too), then the key is checked
    # before a body is read.
    add_api_key_check(app, api_keys)
    metrics.install(app, engine)
    add_cors(app, cors_origins)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = validation_message(list(exc.errors()))
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
            raise not_served(name, model_name)
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

    add_tokenizer_routes(app, tokenizer, cfg, model_name, eos_ids, encode)  # /tokenize, /detokenize, /tokenizer_info

    async def prepare(body: CompletionRequest) -> tuple[list[list[int]], list[str], SamplingParams, int]:
        """Check what the schema cannot (lengths against the context, limits) and tokenize the prompts."""
        shape = check_request(body, model_name, max_n)
        if ignored := ignored_fields(body):
            log.warning("ignoring request fields this server does not know: %s", ", ".join(ignored))
        texts, prompts = [], []
        for p in shape.prompts:
            if isinstance(p, str):
                ids = await run_in_threadpool(encode, p)
                texts.append(p)
            else:
                check_token_ids(p, cfg.vocab_size)
                ids = list(p)
                texts.append(tokenizer.decode(ids))
            check_prompt_ids(ids, cfg.n_positions, shape.max_tokens)
            prompts.append(ids)
        return prompts, texts, sampling_params(body, shape, eos_ids), shape.n

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
        req = GenRequest(
            prompts,
            params,
            n,
            asyncio.get_running_loop(),
            logprobs=body.logprobs,
            echo=bool(body.echo),
            max_tokens=body.max_tokens if body.max_tokens == 0 else None,
        )
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

    def logprobs_of(c, prefix: str, text: str, start: int = 0, end: int | None = None, echo: bool = False):
        """The `logprobs` of choice `c` (None unless asked): generated tokens start..end, after the prompt's if echo."""
        if c.request.logprobs is None:
            return None
        prompt = c.prompt_scores if echo else None
        generated = c.logprobs[:end] if end is not None else list(c.logprobs)
        lead = len(text) - len(text.lstrip())  # the completion's first word usually starts with a space
        return choice_logprobs(
            tokenizer,
            generated,
            len(text),
            base=len(prefix),
            start=start,
            prompt=prompt,
            prompt_len=len(prefix),
            lead=lead,
        )

    async def _stream(req: GenRequest, prefixes: list[str], include_usage: bool, request: Request):
        watcher = asyncio.ensure_future(_watch_disconnect(request, req))
        sent = {c.index: 0 for c in req.choices}  # generated tokens whose log-probabilities went out
        texts = {c.index: "" for c in req.choices}
        by_index = {c.index: c for c in req.choices}

        def piece(index: int, text: str, reason: str | None, count: int | None) -> dict:
            c, start = by_index[index], sent[index]
            texts[index] += text
            if count is None:
                count = len(c.logprobs)
            if reason is None and count > start:  # send only the tokens whose text this chunk completes
                count = start + covered_tokens(tokenizer, c.logprobs[start:count], c.logprobs[:start], texts[index])
            lp = logprobs_of(c, prefixes[index], texts[index], start, count) if count > start else None
            if lp is None and c.request.logprobs is not None:
                lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            sent[index] = max(start, count)
            return {"text": text, "index": index, "logprobs": lp, "finish_reason": reason}

        def echoed(index: int) -> str:
            """The echoed prompt's chunk, once (with its log-probabilities: the engine scores it before any event)."""
            c = by_index[index]
            if index in started or not prefixes[index]:
                return ""
            started.add(index)
            lp = logprobs_of(c, prefixes[index], "", 0, 0, echo=True) if c.prompt_scores is not None else None
            return chunk(req, [{"text": prefixes[index], "index": index, "logprobs": lp, "finish_reason": None}])

        started: set[int] = set()
        try:
            if not req.echo_logprobs:  # nothing to wait for: the prompts go out at once
                for c in req.choices:
                    if first := echoed(c.index):
                        yield first
            remaining = len(req.choices)
            while remaining:
                event = await req.events.get()
                if event[0] == "disconnect":
                    return
                if event[0] == "error":
                    yield f"data: {json.dumps({'error': {'message': event[1], 'type': 'server_error'}})}\n\n"
                    return
                if first := echoed(event[1]):
                    yield first
                if event[0] == "delta":
                    yield chunk(req, [piece(event[1], event[2], None, event[3] if len(event) > 3 else None)])
                else:
                    remaining -= 1
                    yield chunk(req, [piece(event[1], event[2], event[3], None)])
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
                    "logprobs": logprobs_of(c, prefixes[c.index], c.text, echo=True),
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
    announce: Callable[[str], None] | None = None,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
) -> None:
    """Load `model_path` (a model dir, hub id or `preset:NAME` with random weights) and serve it until interrupted.

    `announce` receives the one-line banner (what is served, where) once the model is loaded; default: the log.
    `api_keys` and `cors_origins` as in `create_app`."""
    import uvicorn

    from gpt1.config import preset_name
    from gpt1.loading import load
    from gpt1.runtime import resolve_device

    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is out of range; use 0..65535.")
    if max_batch < 1:
        raise ValueError(f"--max-batch {max_batch} is too small; use 1 or more.")
    if max_queue < 0:
        raise ValueError(f"--max-queue {max_queue} is negative; use 0 or more.")
    api_keys, cors_origins = check_api_keys(api_keys, "--api-key"), check_cors_origins(cors_origins)
    device = resolve_device(device)
    check_port(host, port)  # before loading the model, and long before a "listening on" banner
    if str(device).startswith("cpu") and dtype == torch.float16:
        raise ValueError("--dtype float16 is very slow on CPU; use float32 or bfloat16 there.")
    model, tok = load(model_path, tokenizer, device=device, dtype=dtype)
    name = name or (
        model_path if preset_name(model_path) is not None else Path(model_path.rstrip("/")).name or model_path
    )
    app = create_app(
        model,
        tok,
        name,
        max_batch=max_batch,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        api_keys=api_keys,
        cors_origins=cors_origins,
    )
    if not _is_loopback(host) and not api_keys:
        log.warning(
            "listening on %s without an API key: anyone who can reach this machine can use the API; "
            "set GPT1_API_KEY (or --api-key) and put a TLS reverse proxy in front.",
            host,
        )
    elif not _is_loopback(host):
        log.info(
            "listening on %s over plain HTTP: the API key travels unencrypted unless a TLS proxy is in front.", host
        )
    (announce or log.info)(
        f"gpt1 serve: {name} ({model.num_parameters() / 1e6:.1f}M parameters) on http://{host}:{port}/ "
        f"(API at /v1{', API key required' if api_keys else ''}, max batch {max_batch}, queue {max_queue})"
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
