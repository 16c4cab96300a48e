"""`GET /metrics` for `gpt1 serve`: Prometheus text format (prometheus-client), one registry per app.

Three sources: an ASGI middleware counts HTTP requests by endpoint (the route's template, so odd paths cannot
grow the label set) and status and times them; the engine calls `submitted` and `token` to time each request's
first token and each later token; the engine's own counters and queue (`Engine.snapshot`, also in `/health`) are
read at scrape time, so `/metrics` and `/health` never disagree.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.routing import Match

if TYPE_CHECKING:
    from gpt1.serving.engine import Choice, Engine, GenRequest

__all__ = ["ServerMetrics"]

FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServerMetrics:
    """The server's metrics in a registry of their own (not prometheus-client's global one: several apps can live
    in one process, as in the tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "gpt1_http_requests",
            "HTTP requests answered, by endpoint (route template) and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "gpt1_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer (the last event of a stream), by endpoint.",
            ["endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "gpt1_time_to_first_token_seconds",
            "Time from a completion request's queueing to its first generated token (beam search: to its result).",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.per_token = Histogram(
            "gpt1_time_per_output_token_seconds",
            "Time between consecutive generated tokens of one sequence.",
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self._timing: weakref.WeakKeyDictionary[GenRequest, dict] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # submitted runs on the event loop, token on the engine thread

    # -- engine hooks (the engine thread and the event loop call these; they only record times) --
    def submitted(self, request: GenRequest) -> None:
        with self._lock:
            self._timing[request] = {"start": time.perf_counter(), "first": False, "last": {}}

    def token(self, choice: Choice) -> None:
        """A token was chosen for `choice`: observe the time to the request's first token, or since its last one."""
        now = time.perf_counter()
        with self._lock:
            timing = self._timing.get(choice.request)
            if timing is None:
                return
            if not timing["first"]:
                timing["first"] = True
                self.first_token.observe(now - timing["start"])
            last = timing["last"].get(choice.index)
            if last is not None:
                self.per_token.observe(now - last)
            timing["last"][choice.index] = now

    # -- the app --
    def install(self, app: FastAPI, engine: Engine) -> None:
        """Count `app`'s requests, read `engine`'s counters at scrape time, and serve them at `GET /metrics`."""
        self.registry.register(_EngineCollector(engine))
        registry = self.registry

        @app.get("/metrics", include_in_schema=False)
        async def metrics():
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        app.add_middleware(_CountRequests, metrics=self)


class _CountRequests:
    """ASGI middleware: count every answer by route template and status (401s and 413s included), and time it."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = _endpoint(scope)
            self.metrics.http_requests.labels(endpoint, str(status)).inc()
            self.metrics.http_duration.labels(endpoint).observe(time.perf_counter() - start)


def _endpoint(scope) -> str:
    """The template of the route `scope` asks for ("/v1/models/{name:path}"), or "other" for unknown paths."""
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "other")
    return "other"


class _EngineCollector:
    """The engine's counters and queue, read when scraped (the same numbers as `/health`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self):
        return []  # not known before the first scrape; the registry then calls collect

    def collect(self):
        s = self.engine.snapshot()
        counters = (
            ("gpt1_requests", "requests", "Completion requests accepted into the queue."),
            ("gpt1_requests_cancelled", "requests_cancelled", "Requests stopped because their client went away."),
            ("gpt1_prompt_tokens", "prompt_tokens", "Prompt tokens of the accepted requests (as their usage)."),
            ("gpt1_generation_tokens", "tokens_generated", "Tokens generated, cancelled requests' included."),
            ("gpt1_decode_steps", "steps", "Batched decode steps run."),
        )
        for name, key, doc in counters:
            yield CounterMetricFamily(name, doc, value=s[key])
        gauges = (
            ("gpt1_queue_requests", "queued_requests", "Requests waiting for a row of the batch."),
            ("gpt1_waiting_rows", "waiting_rows", "Sequences waiting for a row of the batch."),
            ("gpt1_running_rows", "active_rows", "Sequences in the running batch (its size)."),
        )
        for name, key, doc in gauges:
            yield GaugeMetricFamily(name, doc, value=s[key])
