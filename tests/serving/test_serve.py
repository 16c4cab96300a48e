"""`gpt1 serve` over real HTTP: a server process started on a free loopback port with a tiny random-weight model and
GPT-1's real tokenizer; OpenAI schema, streaming, stop strings, seeds, batching, errors, a full queue, disconnects,
and greedy / beam outputs equal to transformers' `generate` on the same weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from engine_driver import engine_step, run_alone
from gpt1 import GPT, GPT1Config
from gpt1.inference.sampling import SamplingParams
from gpt1.serving.engine import Engine, GenRequest

CONTEXT = 1024  # long enough for requests that run for seconds (queue and disconnect tests)
MAX_BATCH, MAX_QUEUE = 4, 4
PROMPTS = [
    "the quick brown fox jumps over",
    "once upon a time , there was a",
    "she opened the door and saw",
    "in the beginning",
    "the weather today is",
    "he said that the answer was",
    "my favourite food is",
    "they walked along the river until",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, gpt1_tokenizer) -> Path:
    """A 2-layer random model with GPT-1's vocabulary; a wide init so greedy text is not one token repeated."""
    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny", n_positions=CONTEXT, initializer_range=0.3))
    out = tmp_path_factory.mktemp("serve-model")
    model.save_pretrained(out, tokenizer=gpt1_tokenizer)
    return out


@pytest.fixture(scope="module")
def server(model_dir):
    """`gpt1 serve` in its own process on 127.0.0.1; yields its base URL; stopped after the module."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "gpt1",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--name",
        "tiny-test",
        "--max-batch",
        str(MAX_BATCH),
        "--max-queue",
        str(MAX_QUEUE),
    ]
    log = open(model_dir / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"gpt1 serve did not start:\n{(model_dir / 'server.log').read_text()}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def post(url: str, body, **kw) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json=body, timeout=120, **kw)


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of a server-sent-event stream, in order (each event is one `data:` line)."""
    events = []
    for line in response.iter_lines():
        if line:
            assert line.startswith("data: "), line
            events.append(line[len("data: ") :])
    return events


def streamed(url: str, body: dict) -> tuple[dict[int, str], dict[int, str], list[dict], list[str]]:
    """Text and finish reason per choice index from a streamed completion, plus the parsed chunks and raw events."""
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    chunks = [json.loads(e) for e in events[:-1]]
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for ch in chunks:
        for c in ch["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
            if c["finish_reason"]:
                reasons[c["index"]] = c["finish_reason"]
    return texts, reasons, chunks, events


# ---- the engine, driven step by step -----------------------------------------------------------------------------
def test_rows_joining_a_running_batch_get_their_solo_results(gpt1_tokenizer):
    """Continuous batching: rows that join mid-flight, with prompts longer or shorter than the rows already running
    (so the cache is re-aligned), leave every row's tokens exactly as when that row runs alone."""
    import asyncio

    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny", initializer_range=0.3)).eval()
    loop = asyncio.new_event_loop()  # events are queued on it, never read
    prompts = [gpt1_tokenizer.encode(t) for t in ("hello", " ".join(PROMPTS[:4]), PROMPTS[5], "yes")]
    params = [
        SamplingParams(max_new_tokens=20),
        SamplingParams(max_new_tokens=9, do_sample=True, seed=3, top_k=30),
        SamplingParams(max_new_tokens=15, do_sample=True, seed=4, top_p=0.8, repetition_penalty=1.3),
        SamplingParams(max_new_tokens=12),
    ]
    solo = [run_alone(model, gpt1_tokenizer, ids, p, loop) for ids, p in zip(prompts, params)]

    engine = Engine(model, gpt1_tokenizer, max_batch=3)
    reqs = [GenRequest([ids], p, 1, loop) for ids, p in zip(prompts, params)]
    engine.submit(reqs[0])
    for _ in range(3):
        engine_step(engine)  # "hello" runs alone, then a 25-token prompt joins 4 tokens in
    engine.submit(reqs[1])
    engine_step(engine)
    engine.submit(reqs[2])
    engine.submit(reqs[3])  # waits: 3 rows at most
    rows_seen = set()
    while engine.active or engine.waiting:
        rows_seen.add(len(engine.active))
        engine_step(engine)
    assert [r.choices[0].tokens for r in reqs] == solo
    assert 3 in rows_seen and engine.stats["max_rows"] == 3
    loop.close()


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(do_sample=True, seed=7),
        dict(do_sample=True, seed=8, temperature=0.8, top_k=30, top_p=0.9, repetition_penalty=1.2),
        dict(do_sample=True, seed=9, top_p=0.6, no_repeat_ngram_size=2),
    ],
)
def test_engine_and_generate_choose_the_same_tokens(gpt1_tokenizer, settings):
    """One sampler and one prefill: a request's completion is `generate`'s for the same prompt, seed and settings."""
    import asyncio

    from gpt1.inference.generate import generate

    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny", initializer_range=0.3)).eval()
    ids = gpt1_tokenizer.encode(PROMPTS[6])
    loop = asyncio.new_event_loop()
    served = run_alone(model, gpt1_tokenizer, ids, SamplingParams(max_new_tokens=24, **settings), loop)
    loop.close()
    generated = generate(model, torch.tensor([ids]), max_new_tokens=24, **settings)[0].tolist()
    assert served == generated and len(set(served[len(ids) :])) > 3


# ---- schema ----------------------------------------------------------------------------------------------------
def test_models_and_health(server, model_dir):
    models = httpx.get(server + "/v1/models").json()
    card = models["data"][0]
    assert models["object"] == "list" and card["id"] == "tiny-test" and card["object"] == "model"
    assert card["context_length"] == CONTEXT and card["parameters"] == GPT.from_pretrained(model_dir).num_parameters()
    assert httpx.get(server + "/v1/models/tiny-test").json()["id"] == "tiny-test"
    missing = httpx.get(server + "/v1/models/other")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["max_batch"] == MAX_BATCH and health["max_queue"] == MAX_QUEUE


def test_completion_schema_and_usage(server, gpt1_tokenizer):
    prompts = PROMPTS[:2]
    r = post(server, {"model": "tiny-test", "prompt": prompts, "max_tokens": 7, "n": 2, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny-test" and body["id"].startswith("cmpl-")
    assert isinstance(body["created"], int)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    for c in body["choices"]:
        assert set(c) == {"text", "index", "logprobs", "finish_reason"}
        assert c["finish_reason"] == "length" and c["text"].strip()
    prompt_tokens = sum(len(gpt1_tokenizer.encode(p)) for p in prompts)
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 4 * 7,
        "total_tokens": prompt_tokens + 28,
    }
    echoed = post(server, {"prompt": prompts[0], "max_tokens": 3, "temperature": 0, "echo": True}).json()
    plain = post(server, {"prompt": prompts[0], "max_tokens": 3, "temperature": 0}).json()
    assert echoed["choices"][0]["text"] == prompts[0] + plain["choices"][0]["text"]


def hf_reference(model_dir: Path, prompt_ids: list[int], max_new: int, **kw) -> list[list[int]]:
    transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=0,
            **kw,
        )
    return [row[len(prompt_ids) :].tolist() for row in out]


def hf_text(model_dir: Path, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The completion as text, decoded by HF's tokenizer: the joint decode minus the prompt's own decode."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
    tok = transformers.OpenAIGPTTokenizer.from_pretrained(model_dir)
    full = tok.decode(prompt_ids + new_ids, clean_up_tokenization_spaces=True)
    head = tok.decode(prompt_ids, clean_up_tokenization_spaces=True)
    assert full.startswith(head)
    return full[len(head) :]


def test_greedy_and_beam_match_transformers(server, model_dir, gpt1_tokenizer):
    """Token ids in (OpenAI allows them as the prompt), text out: the same continuation HF's generate picks."""
    ids = gpt1_tokenizer.encode(PROMPTS[0])
    r = post(server, {"prompt": ids, "max_tokens": 12, "temperature": 0}).json()
    assert r["choices"][0]["text"] == hf_text(model_dir, ids, hf_reference(model_dir, ids, 12)[0])
    beams = post(server, {"prompt": ids, "max_tokens": 8, "num_beams": 3, "n": 2}).json()
    expected = hf_reference(model_dir, ids, 8, num_beams=3, num_return_sequences=2)
    assert [c["text"] for c in beams["choices"]] == [hf_text(model_dir, ids, e) for e in expected]
    assert beams["usage"]["completion_tokens"] == 16


def test_concurrent_requests_are_batched_and_kept_apart(server):
    """8 different requests at once (greedy and seeded sampling) give what each gives alone, in batches > 1 row."""
    bodies = [
        {"prompt": p, "max_tokens": 6 + 3 * i, **({"temperature": 0} if i % 2 else {"seed": i, "top_k": 50})}
        for i, p in enumerate(PROMPTS)
    ]
    alone = [post(server, b).json()["choices"][0]["text"] for b in bodies]
    before = httpx.get(server + "/health").json()["steps"]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: post(server, b), bodies))
    assert all(r.status_code == 200 for r in together), [r.text for r in together]
    assert [r.json()["choices"][0]["text"] for r in together] == alone
    health = httpx.get(server + "/health").json()
    assert health["max_rows"] > 1
    # Batching shows in the step count: one step per token of the longest row, not one per token of all rows.
    assert health["steps"] - before < sum(b["max_tokens"] for b in bodies)


# ---- streaming, stop strings, seeds ------------------------------------------------------------------------------
def test_streaming_matches_non_streaming_and_ends_with_done(server):
    body = {"prompt": PROMPTS[1], "max_tokens": 20, "seed": 11, "n": 2, "stream_options": {"include_usage": True}}
    texts, reasons, chunks, events = streamed(server, body)
    assert events[-1] == "[DONE]"
    assert len(chunks) > 4  # text arrives piece by piece
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 40
    assert all(ch["object"] == "text_completion" and ch["model"] == "tiny-test" for ch in chunks)
    assert len({ch["id"] for ch in chunks}) == 1
    whole = post(server, body).json()
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert reasons == {0: "length", 1: "length"}


def test_stop_strings(server):
    base = {"prompt": PROMPTS[2], "max_tokens": 30, "temperature": 0}
    full = post(server, base).json()["choices"][0]["text"]
    words = full.split()
    stop = " " + words[len(words) // 2]  # a word from the middle, with the space before it
    cut = full[: full.index(stop)]
    r = post(server, {**base, "stop": [stop, "zzzz-never"]}).json()["choices"][0]
    assert (r["text"], r["finish_reason"]) == (cut, "stop")
    texts, reasons, _, _ = streamed(server, {**base, "stop": stop})
    assert (texts[0], reasons[0]) == (cut, "stop")  # nothing of the stop string leaks into the stream
    r = post(server, {**base, "stop": "zzzz-never"}).json()["choices"][0]
    assert (r["text"], r["finish_reason"]) == (full, "length")


def test_seeds_reproduce(server):
    body = {"prompt": PROMPTS[3], "max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "n": 2}
    a = post(server, {**body, "seed": 123}).json()["choices"]
    b = post(server, {**body, "seed": 123}).json()["choices"]
    c = post(server, {**body, "seed": 124}).json()["choices"]
    assert [x["text"] for x in a] == [x["text"] for x in b]
    assert a[0]["text"] != c[0]["text"] and a[0]["text"] != a[1]["text"]


# ---- errors ------------------------------------------------------------------------------------------------------
BAD_REQUESTS = [
    ({"prompt": "hi", "top_p": 1.5}, 422, "top_p"),
    ({"prompt": "hi", "top_p": 0}, 422, "top_p"),
    ({"prompt": "hi", "temperature": "hot"}, 422, "temperature"),
    ({"prompt": "hi", "max_tokens": 0}, 422, "max_tokens"),
    ({"prompt": "hi", "n": "2"}, 422, "n"),
    ({"prompt": "hi", "stream": "yes"}, 422, "stream"),
    ({"prompt": 42}, 422, "prompt"),
    ({"max_tokens": 5}, 422, "prompt"),
    ({"prompt": "hi", "n": 17}, 400, "n"),
    ({"prompt": ["hi"] * 9, "n": 2}, 400, "n"),
    ({"prompt": "word " * (CONTEXT + 10)}, 400, "prompt"),
    ({"prompt": "hi", "max_tokens": CONTEXT}, 400, "max_tokens"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": [1, 2, 99999]}, 400, "prompt"),
    ({"prompt": "hi", "stop": [str(i) for i in range(17)]}, 400, "stop"),
    ({"prompt": "hi", "stream": True, "num_beams": 2}, 400, "num_beams"),
    ({"prompt": "hi", "num_beams": 2, "n": 3}, 400, "n"),
    ({"prompt": "hi", "logprobs": 21}, 400, "logprobs"),
    ({"prompt": "hi", "model": "gpt-4"}, 404, "model"),
]


@pytest.mark.parametrize("body,status,param", BAD_REQUESTS, ids=[f"{p}-{s}" for _, s, p in BAD_REQUESTS])
def test_bad_requests_name_the_field(server, body, status, param):
    r = post(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and param in error["message"] and error["type"]
    assert len(error["message"]) < 300


def test_bad_bodies_and_server_stays_up(server):
    r = httpx.post(
        server + "/v1/completions", content=b'{"prompt": "hi",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(server + "/v1/completions", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    big = json.dumps({"prompt": "x" * (2 << 20)}).encode()
    r = httpx.post(server + "/v1/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["param"] == "body" and "bytes" in r.json()["error"]["message"]

    def chunked():  # no content-length: the limit must hold for streamed bodies too
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(server + "/v1/completions", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert post(server, {"prompt": "still", "max_tokens": 2}).status_code == 200


def wait_idle(server: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        health = httpx.get(server + "/health").json()
        if health["active_rows"] == 0 and health["waiting_rows"] == 0:
            return health
        time.sleep(0.1)
    raise AssertionError(f"server still busy after {timeout} s: {health}")


def test_full_queue_answers_503_and_disconnect_stops_generation(server):
    """Fill the batch with a long streamed request, the queue with short ones, and get 503; then hang up the long
    request and see the engine drop it long before its max_tokens, finish the queued ones, and keep serving."""
    start = wait_idle(server)
    long_body = {"prompt": "a long story", "max_tokens": CONTEXT - 10, "n": MAX_BATCH, "stream": True}
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(MAX_QUEUE) as pool:
        with client.stream("POST", server + "/v1/completions", json=long_body) as long_stream:
            lines = long_stream.iter_lines()  # kept: dropping a half-read iterator closes the connection
            assert next(line for line in lines if line).startswith("data: ")  # under way: the batch is full
            queued = [pool.submit(post, server, {"prompt": p, "max_tokens": 2}) for p in PROMPTS[:MAX_QUEUE]]
            deadline = time.time() + 20
            while (health := httpx.get(server + "/health").json())["queued_requests"] < MAX_QUEUE:
                assert time.time() < deadline, f"requests did not queue: {health}"
                time.sleep(0.05)
            refused = post(server, {"prompt": "one too many", "max_tokens": 2})
            assert refused.status_code == 503 and refused.headers.get("retry-after")
            assert "busy" in refused.json()["error"]["message"]
        # leaving the `with` closed the connection mid-stream; the queued requests can now run
        assert all(f.result(timeout=60).status_code == 200 for f in queued)
        done = wait_idle(server)
    assert done["requests_cancelled"] == start["requests_cancelled"] + 1
    generated = done["tokens_generated"] - start["tokens_generated"]
    assert generated < MAX_BATCH * (CONTEXT - 10) / 2, generated  # stopped well before its budget
    assert post(server, {"prompt": "after", "max_tokens": 2}).status_code == 200


def test_non_streaming_disconnect_stops_generation(server):
    start = wait_idle(server)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up (and hangs up) after 0.5 s
        httpx.post(server + "/v1/completions", json={"prompt": "hi", "max_tokens": CONTEXT - 10, "n": 4}, timeout=0.5)
    done = wait_idle(server)
    assert done["requests_cancelled"] == start["requests_cancelled"] + 1
    assert done["tokens_generated"] - start["tokens_generated"] < 4 * (CONTEXT - 10) / 2


# ---- clients -----------------------------------------------------------------------------------------------------
def test_openai_client(server):
    openai = pytest.importorskip("openai", reason="the openai package is an optional test dependency")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-test"]
    r = client.completions.create(model="tiny-test", prompt=PROMPTS[4], max_tokens=5, temperature=0)
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    pieces = [
        ch.choices[0].text
        for ch in client.completions.create(
            model="tiny-test", prompt=PROMPTS[4], max_tokens=5, temperature=0, stream=True
        )
        if ch.choices
    ]
    assert "".join(pieces) == r.choices[0].text
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="tiny-test", prompt="hi", top_p=2.0)


def test_cli_binds_loopback_by_default_and_rejects_bad_flags(model_dir):
    from gpt1.cli.verbs import build_parser

    args = build_parser().parse_args(["serve", "--model", str(model_dir)])
    assert (args.host, args.port, args.max_batch, args.max_queue) == ("127.0.0.1", 8000, 8, 64)
    r = subprocess.run(
        [sys.executable, "-m", "gpt1", "serve", "--model", str(model_dir), "--max-batch", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--max-batch 0" in r.stderr and "Traceback" not in r.stderr


# ---- end of text, one top-k rule, the model card, a busy port ------------------------------------------------------
def _eos_case(gpt1_tokenizer):
    """A tiny model, a prompt, and an id greedy decoding first produces at step k >= 2 (to use as its eos)."""
    from gpt1.inference.generate import generate

    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny", n_positions=64, initializer_range=0.3)).eval()
    prompt = "the quick brown fox jumps over"
    ids = torch.tensor([gpt1_tokenizer.encode(prompt)])
    new = generate(model, ids, max_new_tokens=12)[0, ids.shape[1] :].tolist()
    k = next(i for i in range(2, len(new)) if new[i] not in new[:i])
    return model, prompt, new, k


def test_server_stops_at_the_runs_eos_unless_asked_not_to(gpt1_tokenizer):
    from fastapi.testclient import TestClient

    from gpt1.serving.app import create_app

    model, prompt, new, k = _eos_case(gpt1_tokenizer)
    model.config.extra.update(eos_token_id=new[k], lm_template="JOKE: {text}")  # what finetune-lm saves
    with TestClient(create_app(model, gpt1_tokenizer, "eos-test")) as client:
        body = {"prompt": prompt, "max_tokens": 12, "temperature": 0}
        r = client.post("/v1/completions", json=body).json()
        choice = r["choices"][0]
        assert choice["finish_reason"] == "stop" and r["usage"]["completion_tokens"] == k + 1
        before_eos = client.post("/v1/completions", json={**body, "max_tokens": k}).json()["choices"][0]
        assert before_eos["finish_reason"] == "length" and choice["text"] == before_eos["text"]  # eos not in the text
        streamed_text = ""
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    c = json.loads(line[6:])["choices"][0]
                    streamed_text += c["text"]
                    reason = c["finish_reason"] or None
        assert streamed_text == choice["text"] and reason == "stop"
        past = client.post("/v1/completions", json={**body, "ignore_eos": True}).json()
        assert past["choices"][0]["finish_reason"] == "length" and past["usage"]["completion_tokens"] == 12
        beams = client.post("/v1/completions", json={**body, "num_beams": 2}).json()["choices"][0]
        assert beams["finish_reason"] in ("stop", "length")
        card = client.get("/v1/models").json()["data"][0]
        assert card["eos_token_id"] == new[k] and card["default_prompt"] == "JOKE:"  # the playground starts there


def test_top_k_zero_means_off_in_generate_and_in_the_server(gpt1_tokenizer):
    from gpt1.inference.generate import generate_text
    from gpt1.serving.protocol import CompletionRequest, check_request, sampling_params

    model, prompt, _, _ = _eos_case(gpt1_tokenizer)
    kw = dict(max_new_tokens=8, do_sample=True, seed=5)
    assert generate_text(model, gpt1_tokenizer, prompt, top_k=0, **kw) == generate_text(
        model, gpt1_tokenizer, prompt, **kw
    )
    records = []
    for body in (CompletionRequest(prompt=prompt, top_k=0), CompletionRequest(prompt=prompt)):
        records.append(sampling_params(body, check_request(body, "m", 16), ()))
    assert records[0] == records[1] and records[0].top_k is None


def test_serve_refuses_a_busy_port_before_the_banner(vocab_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gpt1",
                "serve",
                "--model",
                "preset:tiny",
                "--tokenizer",
                str(vocab_dir),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 2 and "gpt1 serve:" not in r.stdout, r.stdout  # no "listening on" banner first
    assert r.stderr.strip().count("\n") == 0 and f"--port {port}" in r.stderr and "already in use" in r.stderr
    assert "Traceback" not in r.stderr
