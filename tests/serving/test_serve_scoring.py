"""Scoring through `gpt1 serve`: `logprobs`/`echo` on /v1/completions equal transformers' log_softmax on the same
random weights, top entries are the true top ones, lm-eval's requests work as it sends them, unknown fields are
ignored with a warning, and the tokenizer endpoints agree with `Tokenizer`. One uvicorn server in a thread."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest
import torch
import torch.nn.functional as F

from engine_driver import engine_step
from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import ours_to_hf
from gpt1.inference.sampling import SamplingParams
from gpt1.inference.scoring import score_tokens
from gpt1.serving.engine import Engine, GenRequest

CONTEXT = 64
PROMPTS = ["the quick brown fox jumps over the lazy dog", "once upon a time , there was a", "hello"]


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    net = GPT(GPT1Config.from_preset("tiny", n_positions=CONTEXT, initializer_range=0.3)).eval()
    net.resize_token_embeddings(tokenizer.vocab_size)  # room for <|endoftext|>
    return net


@pytest.fixture(scope="module")
def hf(model):
    transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")
    transformers.logging.set_verbosity_error()
    cfg = {k: v for k, v in model.config.to_hf_dict().items() if not k.startswith("gpt1_")}
    ref = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**cfg)).eval()
    ref.load_state_dict(ours_to_hf(model.state_dict()), strict=False)
    ref.tie_weights()
    return ref


@pytest.fixture(scope="module")
def tokenizer(gpt1_tokenizer):
    import copy

    tok = copy.deepcopy(gpt1_tokenizer)
    tok.add_special_tokens(["<|endoftext|>"])  # what a pre-training run's tokenizer carries
    return tok


@pytest.fixture(scope="module")
def server(model, tokenizer):
    uvicorn = pytest.importorskip("uvicorn")
    from gpt1.serving.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, tokenizer, "tiny-score", max_batch=4)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not srv.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


def post(url, body, path="/v1/completions"):
    return httpx.post(url + path, json=body, timeout=60)


def reference(hf, ids):
    with torch.no_grad():
        return F.log_softmax(hf(torch.tensor([ids])).logits[0].float(), -1)


def ids_of(tokenizer, tokens):
    return [tokenizer.token_to_id(t) for t in tokens]


def check_against(hf, tokenizer, logprobs, k, first_is_null=True):
    """Every reported log-probability and top entry equals transformers' on the sequence the tokens make."""
    ids = ids_of(tokenizer, logprobs["tokens"])
    ref = reference(hf, ids)
    start = 1 if first_is_null else 0
    if first_is_null:
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    for i in range(max(start, 1), len(ids)):
        assert logprobs["token_logprobs"][i] == pytest.approx(float(ref[i - 1, ids[i]]), abs=1e-4)
        top = logprobs["top_logprobs"][i]
        best = ref[i - 1].topk(k)
        want = dict(zip(ids_of_strings(tokenizer, best.indices.tolist()), best.values.tolist()))
        want.setdefault(logprobs["tokens"][i], float(ref[i - 1, ids[i]]))  # the chosen token is always there
        assert top.keys() == want.keys()
        for name, v in want.items():
            assert top[name] == pytest.approx(v, abs=1e-4)
    return ids


def ids_of_strings(tokenizer, ids):
    return [tokenizer.id_to_token(i) for i in ids]


def test_echo_scores_the_prompt_and_the_completion(server, hf, tokenizer):
    """String prompt, echo, sampling at temperature 0.7: reported logprobs are still the model's at temperature 1."""
    body = {"prompt": PROMPTS[0], "max_tokens": 4, "logprobs": 3, "echo": True, "temperature": 0.7, "seed": 3}
    r = post(server, body).json()
    choice = r["choices"][0]
    lp = choice["logprobs"]
    prompt_ids = tokenizer.encode(PROMPTS[0])
    assert len(lp["tokens"]) == len(prompt_ids) + r["usage"]["completion_tokens"] == len(prompt_ids) + 4
    ids = check_against(hf, tokenizer, lp, 3)
    assert ids[: len(prompt_ids)] == prompt_ids
    assert choice["text"].startswith(PROMPTS[0])
    offsets = lp["text_offset"]
    assert offsets == sorted(offsets) and offsets[0] == 0 and offsets[-1] < len(choice["text"])
    for tok, off in zip(lp["tokens"], offsets):  # each offset points at its token's text
        assert choice["text"][off:].startswith(tok.replace("</w>", ""))


def test_without_echo_only_generated_tokens_are_scored(server, hf, tokenizer):
    body = {"prompt": PROMPTS[1], "max_tokens": 5, "logprobs": 2, "temperature": 0}
    choice = post(server, body).json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == 5 and None not in lp["token_logprobs"]
    prompt_ids = tokenizer.encode(PROMPTS[1])
    full = {**lp, **{k: [None] * len(prompt_ids) + lp[k] for k in ("tokens", "token_logprobs", "top_logprobs")}}
    full["tokens"] = ids_of_strings(tokenizer, prompt_ids) + lp["tokens"]
    ref = reference(hf, ids_of(tokenizer, full["tokens"]))
    for j, tok in enumerate(lp["tokens"]):
        pos = len(prompt_ids) + j
        assert lp["token_logprobs"][j] == pytest.approx(float(ref[pos - 1, tokenizer.token_to_id(tok)]), abs=1e-4)
        assert max(lp["top_logprobs"][j].values()) == lp["token_logprobs"][j]  # greedy: the chosen token is the top


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_lm_eval_style_token_id_batches(server, hf, tokenizer, max_tokens):
    """What lm-eval sends: token-id prompts in a batch, echo, logprobs 1, max_tokens 1 (0.4.13) or 0 (< 0.4.4)."""
    g = torch.Generator().manual_seed(max_tokens)
    longest = CONTEXT - max_tokens  # scoring alone may fill the whole context
    prompts = [torch.randint(0, 40478, (n,), generator=g).tolist() for n in (5, longest, 2, 17)]
    body = {"prompt": prompts, "max_tokens": max_tokens, "logprobs": 1, "echo": True, "temperature": 0, "seed": 1234}
    r = post(server, body)
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    for p, choice in zip(prompts, choices):
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(p) + max_tokens
        ids = check_against(hf, tokenizer, lp, 1)
        assert ids[: len(p)] == p
        ref = reference(hf, p)
        for i in range(1, len(p)):  # lm-eval's is_greedy test: the token's logprob is the top one's
            greedy = lp["token_logprobs"][i] == max(lp["top_logprobs"][i].values())
            assert greedy == bool(ref[i - 1].argmax() == p[i])
        if max_tokens:
            assert ids[-1] == int(ref[-1].argmax())  # temperature 0: the argmax follows


def test_streamed_logprobs_equal_the_whole_answer(server):
    body = {"prompt": PROMPTS[2], "max_tokens": 8, "logprobs": 2, "echo": True, "temperature": 0}
    whole = post(server, body).json()["choices"][0]
    text, merged = "", {k: [] for k in whole["logprobs"]}
    with httpx.stream("POST", server + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                c = json.loads(line[6:])["choices"][0]
                text += c["text"]
                for k in merged:
                    merged[k] += c["logprobs"][k]
    assert text == whole["text"]
    assert merged == whole["logprobs"]


def test_unknown_fields_are_ignored_with_a_warning_and_result_changing_ones_refused(server, caplog):
    with caplog.at_level(logging.WARNING, logger="gpt1.serving.app"):
        r = post(server, {"prompt": "hi", "max_tokens": 2, "frobnicate": 1, "skip_special_tokens": True})
    assert r.status_code == 200, r.text
    assert any("frobnicate" in m and "skip_special_tokens" in m for m in caplog.messages)
    for body, param in (
        ({"prompt": "hi", "min_p": 0.3}, "min_p"),
        ({"prompt": "hi", "logprobs": 21}, "logprobs"),
        ({"prompt": "hi", "logprobs": 1, "num_beams": 2}, "logprobs"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "w " * (CONTEXT + 1), "max_tokens": 0, "echo": True, "logprobs": 0}, "prompt"),
    ):
        r = post(server, body)
        assert r.status_code in (400, 422) and r.json()["error"]["param"] == param, r.text
    assert post(server, {"prompt": "hi", "min_p": 0.0, "max_tokens": 1}).status_code == 200  # neutral: fine


def test_tokenizer_endpoints(server, tokenizer):
    text = "Don't stop believing.\nHold on to that feeling!"
    r = post(server, {"prompt": text, "add_special_tokens": False}, "/tokenize").json()
    assert r["tokens"] == tokenizer.encode(text) and r["count"] == len(r["tokens"]) and r["max_model_len"] == CONTEXT
    eot = tokenizer.special_tokens["<|endoftext|>"]
    r = post(server, {"prompt": "a<|endoftext|>b"}, "/tokenize").json()
    assert r["tokens"] == tokenizer.encode("a") + [eot] + tokenizer.encode("b")  # special tokens read as such
    ids = tokenizer.encode(text)
    assert post(server, {"tokens": ids}, "/detokenize").json() == {"prompt": tokenizer.decode(ids)}
    r = post(server, {"tokens": [1, 10**6]}, "/detokenize")
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens" and "1000000" in r.text
    info = httpx.get(server + "/tokenizer_info").json()
    assert info["eos_token"] == "<|endoftext|>" and info["model_max_length"] == CONTEXT and info["bos_token"] is None


def test_lm_eval_remote_tokenizer(server, tokenizer):
    lm_eval_utils = pytest.importorskip("lm_eval.utils", reason="lm-eval is in the eval extra")
    assert lm_eval_utils.check_remote_tokenizer_support(server + "/v1/completions")
    remote = lm_eval_utils.RemoteTokenizer(server + "/v1/completions")
    assert remote.encode(PROMPTS[0]) == tokenizer.encode(PROMPTS[0])
    assert remote.eos_token_id == tokenizer.special_tokens["<|endoftext|>"]


def test_openai_client_logprobs_and_echo(server, hf, tokenizer):
    openai = pytest.importorskip("openai", reason="the openai package is an optional test dependency")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    r = client.completions.create(model="tiny-score", prompt=PROMPTS[1], max_tokens=3, logprobs=2, echo=True)
    lp = r.choices[0].logprobs
    check_against(
        hf,
        tokenizer,
        {"tokens": lp.tokens, "token_logprobs": lp.token_logprobs, "top_logprobs": lp.top_logprobs},
        2,
    )
    assert len(lp.text_offset) == len(lp.tokens) == len(tokenizer.encode(PROMPTS[1])) + 3


def test_scoring_rows_join_the_running_batch_and_change_nothing(model, tokenizer):
    """A scoring request admitted while another request decodes: its scores equal `score_tokens`, and the running
    request's tokens equal those it gets alone."""
    import asyncio

    loop = asyncio.new_event_loop()
    greedy = SamplingParams(max_new_tokens=12, do_sample=False)

    def run(engine, until):
        while not until():
            engine_step(engine)

    prompt = tokenizer.encode(PROMPTS[0])
    alone = Engine(model, tokenizer, max_batch=4)
    solo = GenRequest([prompt], greedy, 1, loop)
    alone.submit(solo)
    run(alone, lambda: solo.choices[0].finish_reason is not None)

    engine = Engine(model, tokenizer, max_batch=4)
    gen = GenRequest([prompt], greedy, 1, loop)
    engine.submit(gen)
    run(engine, lambda: gen.choices[0].generated >= 3)
    prompts = [tokenizer.encode(p) for p in PROMPTS[1:]]
    scoring = GenRequest(prompts, SamplingParams(max_new_tokens=1, do_sample=False), 1, loop, logprobs=2, echo=True)
    engine.submit(scoring)
    run(engine, lambda: all(c.finish_reason for c in gen.choices + scoring.choices))
    assert gen.choices[0].tokens == solo.choices[0].tokens
    want = score_tokens(model, prompts, top_k=2, precision="fp32")
    for c, w in zip(scoring.choices, want):
        assert c.prompt_scores.ids == w.ids and len(c.logprobs) == 1
        assert c.prompt_scores.logprobs[1:] == pytest.approx(w.logprobs[1:], abs=1e-5)
        assert [t for t, _ in c.prompt_scores.top[-1]] == [t for t, _ in w.top[-1]]
    loop.close()


def test_lm_eval_local_completions_against_the_server(server, model, tokenizer):
    """lm-eval's own `local-completions` client: loglikelihood and rolling equal `score_tokens`' sums."""
    pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api] (tenacity)")
    api = pytest.importorskip("lm_eval.models.openai_completions", reason="lm-eval is in the eval extra")
    from lm_eval.api.instance import Instance

    lm = api.LocalCompletionsAPI(
        base_url=server + "/v1/completions", tokenizer_backend="remote", max_length=CONTEXT, batch_size=2
    )
    pairs = [("the cat sat on", " the mat"), ("hello", " world"), ("a b c", " d e")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])
    for (ctx, cont), (ll, is_greedy) in zip(pairs, got):
        c, x = tokenizer.encode(ctx), tokenizer.encode(cont)
        s = score_tokens(model, [c + x], precision="fp32")[0]
        assert ll == pytest.approx(sum(s.logprobs[len(c) :]), abs=1e-3) and is_greedy == all(s.greedy[len(c) :])
    text = " ".join(PROMPTS * 8)  # longer than one window
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    eot, ids = tokenizer.special_tokens["<|endoftext|>"], tokenizer.encode(text)
    width = CONTEXT - 1  # lm-eval sends at most max_length - 1 tokens and asks for one more
    assert len(ids) > 2 * width
    pieces = [([eot] + ids[: width - 1], width - 1)]  # (sequence, how many of its last tokens are scored)
    done = width - 1
    while done < len(ids):  # later windows: each new token once, after as much context as fits
        n = min(len(ids) - done, width - 1)
        pieces.append((ids[done + n - width : done + n], n))
        done += n
    want = sum(sum(score_tokens(model, [seq], precision="fp32")[0].logprobs[-n:]) for seq, n in pieces)
    assert rolling == pytest.approx(want, abs=1e-3)
