"""The playground page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser) against
a server on a free loopback port. Type a prompt, Generate, watch text stream in, Stop; the screenshot is saved to
test-artifacts/playground.png."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from gpt1 import GPT, GPT1Config

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (scripts/install.sh test does, as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(gpt1_tokenizer):
    """The app on uvicorn in a thread of this process (so the test can read the engine's counters)."""
    import uvicorn

    from gpt1.serving.app import create_app

    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny", n_positions=1024, initializer_range=0.3))
    app = create_app(model, gpt1_tokenizer, "tiny-playground", max_batch=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield url, app
    srv.should_exit = True
    thread.join(timeout=15)


def completion_length(page) -> int:
    return page.evaluate("document.getElementById('completion').textContent.length")


def test_generate_streams_and_stop_stops(browser, server):
    url, app = server
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: r.url.endswith("/v1/completions") or errors.append(f"{r.url}: {r.failure}"))
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('parameters')")
    info = page.text_content("#model-info")
    assert "tiny-playground" in info and "5.7M parameters" in info and "context 1024" in info

    # A short greedy run first: the page shows exactly what the API returns.
    page.fill("#prompt", "The old man looked at the sea and")
    page.check("#greedy")
    assert page.is_disabled("#temperature")  # greedy turns the sampling controls off
    page.fill("#max-tokens", "12")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=30000)
    api = httpx.post(
        url + "/v1/completions",
        json={"prompt": "The old man looked at the sea and", "max_tokens": 12, "temperature": 0},
    ).json()
    assert page.text_content("#completion") == api["choices"][0]["text"]
    assert page.text_content("#prompt-echo") == "The old man looked at the sea and"
    assert "12 tokens" in page.text_content("#status")

    # A long sampled run: text arrives piece by piece, and Stop ends it in the page and on the server.
    page.uncheck("#greedy")
    page.fill("#prompt", "It was a bright cold day in April, and the clocks were striking thirteen.")
    page.fill("#max-tokens", "1000")
    page.fill("#seed", "7")
    cancelled_before = app.state.engine.snapshot()["requests_cancelled"]
    page.click("#generate")
    page.wait_for_function("document.getElementById('completion').textContent.length > 0", timeout=30000)
    first = completion_length(page)
    page.wait_for_function(f"document.getElementById('completion').textContent.length > {first + 40}", timeout=30000)
    assert page.is_enabled("#stop") and page.is_disabled("#generate")
    assert page.text_content("#status").startswith("generating")
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'stopped'", timeout=10000)
    stopped_at = completion_length(page)
    assert page.is_enabled("#generate") and page.is_disabled("#stop")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    time.sleep(0.5)
    assert completion_length(page) == stopped_at  # nothing arrives after Stop
    deadline = time.time() + 10
    while (stats := app.state.engine.snapshot())["active_rows"]:
        assert time.time() < deadline, f"the server kept generating after Stop: {stats}"
        time.sleep(0.05)
    assert stats["requests_cancelled"] == cancelled_before + 1
    assert not errors, errors
    page.close()


def test_page_needs_nothing_from_the_network():
    """No CDN: every script and style is inline, so the page works offline and on an air-gapped machine."""
    from importlib import resources

    html = resources.files("gpt1.serving").joinpath("static/playground.html").read_text(encoding="utf-8")
    for marker in ("<script src", "<link ", "@import", "http://", "https://"):
        assert marker not in html, marker
