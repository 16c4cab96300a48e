"""`gpt1 serve` made fit to expose: API keys (401 in OpenAI's shape, constant-time compare, /health and the playground
open, GPT1_API_KEY, the CLI flags), `/metrics` scraped after real traffic, CORS preflights, the exposure warning,
and the playground asking for the key. Servers run in this process (uvicorn in a thread) on a free loopback port."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gpt1 import GPT, GPT1Config
from gpt1.serving import security
from gpt1.serving.app import create_app

CONTEXT = 256
KEYS = ("key-one-0123456789", "key-two-abcdefghij")
ORIGIN = "https://app.example.com"
GOOD = {"Authorization": f"Bearer {KEYS[1]}"}
PROTECTED = [
    ("GET", "/v1/models"),
    ("GET", "/v1/models/tiny-ops"),
    ("POST", "/v1/completions"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("GET", "/tokenizer_info"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPT1Config.from_preset("tiny", n_positions=CONTEXT, initializer_range=0.3)).eval()


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """`app` on uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def keyed(model, gpt1_tokenizer):
    """A server with two API keys and one allowed CORS origin: (url, app)."""
    app = create_app(model, gpt1_tokenizer, "tiny-ops", max_batch=4, api_keys=KEYS, cors_origins=[ORIGIN])
    with running(app) as url:
        yield url, app


# ---- API keys ------------------------------------------------------------------------------------------------------
def assert_401(r: httpx.Response, words: str) -> None:
    assert r.status_code == 401, (r.request.url, r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key" and words in error["message"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_api_path_needs_a_key(keyed, method, path):
    """/v1/*, the tokenizer endpoints (whether or not they exist yet), /metrics and the docs: 401 without a key, with
    a wrong one or another scheme; never 401 with either right key."""
    url, _ = keyed
    body = {"json": {"prompt": "hi", "max_tokens": 2}} if method == "POST" else {}
    assert_401(httpx.request(method, url + path, **body), "Authorization: Bearer")
    assert_401(httpx.request(method, url + path, headers={"Authorization": "Bearer nope"}, **body), "incorrect")
    assert_401(httpx.request(method, url + path, headers={"Authorization": f"Bearer {KEYS[0]}x"}, **body), "incorrect")
    assert_401(httpx.request(method, url + path, headers={"Authorization": f"Basic {KEYS[0]}"}, **body), "Bearer")
    for key in KEYS:
        r = httpx.request(method, url + path, headers={"Authorization": f"bearer {key}"}, **body)
        assert r.status_code != 401, (path, r.text)


def test_right_key_gets_answers_and_health_and_playground_stay_open(keyed):
    url, _ = keyed
    r = httpx.post(url + "/v1/completions", json={"prompt": "hello there", "max_tokens": 3}, headers=GOOD)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert httpx.get(url + "/v1/models", headers=GOOD).json()["data"][0]["id"] == "tiny-ops"
    assert httpx.get(url + "/health").json()["status"] == "ok"
    page = httpx.get(url + "/")
    assert page.status_code == 200 and 'id="api-key"' in page.text


def test_openai_client_sends_the_key(keyed):
    openai = pytest.importorskip("openai", reason="the openai package is an optional test dependency")
    url, _ = keyed
    good = openai.OpenAI(base_url=url + "/v1", api_key=KEYS[0], max_retries=0)
    assert good.completions.create(model="tiny-ops", prompt="hi", max_tokens=2).usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch, model, gpt1_tokenizer):
    """hmac.compare_digest over equal-length digests, once per configured key, even when the first one matches."""
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    three = (*KEYS, "key-three-xyz")
    with TestClient(create_app(model, gpt1_tokenizer, "t", api_keys=three)) as client:
        for key, status in ((KEYS[0], 200), ("x", 401), (three[2], 200), (three[2] * 40, 401)):
            calls.clear()
            assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == status
            assert calls == [(32, 32)] * 3


def test_without_a_key_nothing_is_asked(model, gpt1_tokenizer):
    with TestClient(create_app(model, gpt1_tokenizer, "t")) as client:
        assert client.get("/v1/models").status_code == 200
        assert client.get("/metrics").status_code == 200
        r = client.options("/v1/completions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers  # no CORS unless asked for, as before


def test_keys_from_flags_or_the_environment():
    env = {security.API_KEY_ENV: " alpha-1 , beta-2 "}
    assert security.api_keys_from(None, env) == ("alpha-1", "beta-2")
    assert security.api_keys_from(["flag-1", "flag-2", "flag-1"], env) == ("flag-1", "flag-2")  # flags win
    assert security.api_keys_from(None, {}) == () == security.api_keys_from([], {security.API_KEY_ENV: "  "})
    for keys, env, source in (
        (["with space"], {}, "--api-key"),
        (["ok", ""], {}, "--api-key"),
        (["caf\u00e9"], {}, "--api-key"),
        (None, {security.API_KEY_ENV: "a,,b"}, security.API_KEY_ENV),
    ):
        with pytest.raises(ValueError) as e:
            security.api_keys_from(keys, env)
        assert str(e.value).startswith(source)
        assert not any(k in str(e.value) for k in keys or () if len(k) > 3)  # a key is a secret: never echoed


# ---- the CLI --------------------------------------------------------------------------------------------------------
@pytest.fixture
def served(monkeypatch):
    """What `gpt1 serve` would pass to `serve` (which is replaced, so nothing loads or listens)."""
    import gpt1.serving.app

    calls = []

    @functools.wraps(gpt1.serving.app.serve)  # the parser reads its defaults from serve's signature
    def fake(*args, **kw):
        calls.append(kw)

    monkeypatch.setattr(gpt1.serving.app, "serve", fake)
    monkeypatch.delenv(security.API_KEY_ENV, raising=False)
    return calls


def test_cli_flags_and_env(served, monkeypatch):
    from gpt1.cli.verbs import build_parser, main

    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.api_key is None and args.cors_origin == []
    argv = ["serve", "--model", "preset:tiny", "--api-key", "k-1", "--api-key", "k-2", "--cors-origin", ORIGIN]
    assert main([*argv, "--cors-origin", "http://localhost:5173"]) == 0
    assert served[-1]["api_keys"] == ("k-1", "k-2")
    assert served[-1]["cors_origins"] == (ORIGIN, "http://localhost:5173")
    monkeypatch.setenv(security.API_KEY_ENV, "env-1,env-2")
    assert main(["serve", "--model", "preset:tiny"]) == 0 and served[-1]["api_keys"] == ("env-1", "env-2")
    assert main(argv) == 0 and served[-1]["api_keys"] == ("k-1", "k-2")


@pytest.mark.parametrize(
    "extra,env,words",
    [
        (["--api-key", "two words"], None, "--api-key: key 1"),
        (["--api-key", "ok", "--api-key", "a,b"], None, "--api-key: key 2"),
        ([], "good,,", "GPT1_API_KEY: key 2 is empty"),
        (["--cors-origin", "app.example.com"], None, "--cors-origin app.example.com: not an origin"),
        (["--cors-origin", "https://app.example.com/"], None, "--cors-origin https://app.example.com/"),
        (["--cors-origin", "ftp://x.org"], None, "--cors-origin ftp://x.org"),
    ],
)
def test_cli_refuses_bad_keys_and_origins_in_one_line(served, monkeypatch, capsys, extra, env, words):
    from gpt1.cli.verbs import main

    if env is not None:
        monkeypatch.setenv(security.API_KEY_ENV, env)
    assert main(["serve", "--model", "preset:tiny", *extra]) == 2 and not served
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("gpt1 serve: error:") and words in err, err
    assert "two words" not in err and "a,b" not in err  # a key is a secret: never echoed


def test_exposed_without_a_key_warns(monkeypatch, caplog, vocab_dir):
    import uvicorn

    from gpt1.serving.app import serve

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    banners = []
    for host, keys in (("0.0.0.0", ()), ("0.0.0.0", KEYS), ("127.0.0.1", ())):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gpt1.serving.app"):
            serve("preset:tiny", host=host, port=port, tokenizer=str(vocab_dir), api_keys=keys, announce=banners.append)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if host == "0.0.0.0" and not keys:
            assert len(warnings) == 1 and "without an API key" in warnings[0] and "GPT1_API_KEY" in warnings[0]
        else:
            assert not warnings, warnings
    assert "API key required" in banners[1] and "API key" not in banners[0]


# ---- /metrics ---------------------------------------------------------------------------------------------------------
def scrape(url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(url + "/metrics", headers=GOOD)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def wait_idle(app, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while (s := app.state.engine.snapshot())["active_rows"] or s["waiting_rows"]:
        assert time.time() < deadline, s
        time.sleep(0.05)


def test_metrics_count_a_few_requests_exactly(keyed, gpt1_tokenizer):
    url, app = keyed
    wait_idle(app)
    before = scrape(url)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    completions = url + "/v1/completions"
    plain = httpx.post(completions, json={"prompt": "the cat sat on", "max_tokens": 5}, headers=GOOD).json()
    body = {"prompt": "a b c d", "max_tokens": 7, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", completions, json=body, headers=GOOD) as r:
        usage = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")][-1]["usage"]
    assert httpx.post(completions, json={"prompt": "hi", "max_tokens": CONTEXT}, headers=GOOD).status_code == 400
    assert httpx.post(completions, json={"prompt": "hi", "top_p": 7}, headers=GOOD).status_code == 422
    assert httpx.post(completions, json={"prompt": "hi"}).status_code == 401
    long_prompt = "once upon a time"
    with httpx.Client(timeout=60) as client:
        with client.stream(
            "POST", completions, json={"prompt": long_prompt, "max_tokens": CONTEXT - 10, "stream": True}, headers=GOOD
        ) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line).startswith("data: ")
            during = scrape(url)  # the long request is running on its own
        # leaving the block hung up mid-stream
    wait_idle(app)
    after = scrape(url)

    assert during[("gpt1_running_rows", ())] == 1 and during[("gpt1_queue_requests", ())] == 0
    assert after[("gpt1_running_rows", ())] == 0 and after[("gpt1_queue_requests", ())] == 0
    endpoint = "/v1/completions"
    assert delta("gpt1_http_requests_total", endpoint=endpoint, status="200") == 3
    for status in ("400", "422", "401"):
        assert delta("gpt1_http_requests_total", endpoint=endpoint, status=status) == 1
    assert delta("gpt1_http_requests_total", endpoint="/metrics", status="200") == 2  # before and during
    assert delta("gpt1_http_request_duration_seconds_count", endpoint=endpoint) == 6
    assert delta("gpt1_requests_total") == 3 and delta("gpt1_requests_cancelled_total") == 1
    prompt_tokens = plain["usage"]["prompt_tokens"] + usage["prompt_tokens"] + len(gpt1_tokenizer.encode(long_prompt))
    assert delta("gpt1_prompt_tokens_total") == prompt_tokens
    generated = delta("gpt1_generation_tokens_total")
    cancelled_tokens = generated - 5 - 7
    assert 1 <= cancelled_tokens < CONTEXT - 10  # stopped before its budget
    assert delta("gpt1_time_to_first_token_seconds_count") == 3  # one per request that got a token
    assert delta("gpt1_time_per_output_token_seconds_count") == generated - 3  # every later token
    assert delta("gpt1_time_per_output_token_seconds_sum") > 0


def test_metrics_registries_are_per_app(model, gpt1_tokenizer):
    """Two apps in one process: their own counters (not prometheus-client's global registry)."""
    with (
        TestClient(create_app(model, gpt1_tokenizer, "a")) as a,
        TestClient(create_app(model, gpt1_tokenizer, "b")) as b,
    ):
        for _ in range(3):
            a.get("/health")
        b.get("/health")
        counts = []
        for client in (a, b):
            families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
            counts.append(
                next(
                    s.value
                    for s in families["gpt1_http_requests"].samples
                    if s.labels == {"endpoint": "/health", "status": "200"}
                )
            )
        assert counts == [3, 1]


# ---- CORS -------------------------------------------------------------------------------------------------------------
def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url + "/v1/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_allows_the_configured_origin_only(keyed):
    """Preflights need no key (browsers send none); the request itself does, and its 401 carries the CORS header
    so the page can read why."""
    url, _ = keyed
    ok = preflight(url, ORIGIN)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = preflight(url, "https://evil.example.net")
    assert "access-control-allow-origin" not in other.headers
    body = {"prompt": "hi", "max_tokens": 2}
    refused = httpx.post(url + "/v1/completions", json=body, headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    answered = httpx.post(url + "/v1/completions", json=body, headers={"Origin": ORIGIN, **GOOD})
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ORIGIN
    elsewhere = httpx.post(url + "/v1/completions", json=body, headers={"Origin": "https://evil.example.net", **GOOD})
    assert "access-control-allow-origin" not in elsewhere.headers


# ---- the playground ----------------------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")


def test_playground_asks_for_the_key_and_sends_it(keyed):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (scripts/install.sh test does, as root)")
    url, _ = keyed
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('API key')")
            page.fill("#api-key", KEYS[0])
            page.dispatch_event("#api-key", "change")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('parameters')")
            page.check("#greedy")
            page.fill("#max-tokens", "6")
            page.fill("#prompt", "the old man")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=30000)
            api = httpx.post(
                url + "/v1/completions", json={"prompt": "the old man", "max_tokens": 6, "temperature": 0}, headers=GOOD
            ).json()
            assert page.text_content("#completion") == api["choices"][0]["text"]
            assert page.evaluate("sessionStorage.getItem('gpt1-api-key')") == KEYS[0]
            page.reload()  # the key survives a reload of the tab
            page.wait_for_function("document.getElementById('model-info').textContent.includes('parameters')")
            page.fill("#api-key", "wrong")
            page.dispatch_event("#api-key", "change")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('API key')")
        finally:
            browser.close()
