"""int8 weight-only quantisation (gpt1.model.quantize): error bounds per layer type, decoding, scoring, serving,
save/load, and the refusals (training, bad --dtype).

Error bounds, from the scales: a weight's rounding error is at most half its row's step, |w - q s| <= s/2, so an
output of `x @ w.T` moves by at most (s_j / 2) * sum|x| from the weights; the CPU kernel also rounds its input and
its output to bf16 (relative error <= 2^-9 each, 2^-8 allowed), adding 2^-8 * (sum_k |x_k| |q_jk s_j| + |y_j|).
The embedding lookup has only the first term per element: |row - q s| <= s/2. These are worst cases, so they hold
for any seed; a wrong scale, a transposed matrix or a row mix-up breaks them by orders of magnitude, and the RMS
checks (rounding error is uniform, RMS step/sqrt(12)) catch errors that stay under the worst case.
"""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from gpt1 import GPT, GPT1Config
from gpt1.cli.verbs import main
from gpt1.inference.generate import generate
from gpt1.inference.sampling import SamplingParams
from gpt1.loading import load_model
from gpt1.model import quantize as quant
from gpt1.model.quantize import Int8Embedding, Int8Linear, TiedInt8Head, symmetric_int8

# Width 64 (a multiple of 16: PyTorch's int8 kernel runs) and a wide init so greedy text varies.
SMALL = dict(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=4, initializer_range=0.3)
BF16_EPS = 2.0**-8


def float_model(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPT1Config(**{**SMALL, **overrides})).eval()


@pytest.fixture(scope="module")
def pair() -> tuple[GPT, GPT]:
    """(float model, its int8 copy)."""
    model = float_model()
    return model, copy.deepcopy(model).quantize("int8")


def linear_bound(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, y_ref: torch.Tensor) -> torch.Tensor:
    """The worst-case |int8 output - float output| of the module docstring, per output element."""
    s = s.float()
    weight_term = x.abs().sum(-1, keepdim=True) * s / 2
    rounding = BF16_EPS * (x.abs() @ (q.float().abs() * s[:, None]).t() + y_ref.abs())
    return weight_term + rounding + 1e-6


def test_symmetric_int8_scales_are_bf16_do_not_clip_and_round_to_nearest():
    w = torch.randn(300, 96) * torch.logspace(-3, 1, 300)[:, None]  # rows of very different sizes
    w[7] = 0  # an all-zero row gets a positive scale, not NaN
    q, s = symmetric_int8(w)
    assert q.dtype == torch.int8 and s.dtype == torch.bfloat16 and q.shape == w.shape and s.shape == (300,)
    sf = s.float()
    assert (sf > 0).all() and int(q.abs().max()) <= 127
    amax = w.abs().amax(1)
    assert (sf * 127 >= amax).all()  # rounded up: the largest weight fits
    assert (sf <= amax / 127 * (1 + 2**-7) + 1e-30).all() or bool((amax == 0).any())
    err = (w - q.float() * sf[:, None]).abs()
    assert (err <= sf[:, None] / 2 * (1 + 1e-6)).all()
    nonzero = amax > 0
    assert (q[nonzero].abs().amax(1) >= 126).all()  # the range is used


@pytest.mark.parametrize("shape", [(192, 64), (64, 64), (256, 64), (64, 256), (40, 24)])  # 24: the fallback path
def test_int8_linear_within_the_bound_of_its_scales(shape):
    torch.manual_seed(1)
    out_f, in_f = shape
    lin = nn.Linear(in_f, out_f)
    nn.init.normal_(lin.weight, std=0.3)
    nn.init.normal_(lin.bias, std=0.3)
    q8 = Int8Linear.from_linear(lin)
    assert q8.weight.dtype == torch.int8 and q8.bias.dtype == torch.float32
    x = torch.randn(5, 3, in_f)
    with torch.no_grad():
        ref = lin(x)
        got = q8(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    bound = linear_bound(x, q8.weight, q8.weight_scale, ref)
    assert ((got - ref).abs() <= bound).all()
    # Typical error: weight rounding is uniform in +-s/2, so RMS about (s/sqrt(12)) * |x|_2; allow 2x plus bf16's share.
    typical = (x.norm(dim=-1, keepdim=True) * q8.weight_scale.float() / 12**0.5).pow(2).mean().sqrt()
    assert (got - ref).pow(2).mean().sqrt() < 2 * typical + 4 * BF16_EPS * ref.pow(2).mean().sqrt()


def test_embedding_and_tied_head_share_one_int8_matrix(pair):
    model, q8 = pair
    assert isinstance(q8.tokens_embed, Int8Embedding) and isinstance(q8.lm_head, TiedInt8Head)
    assert q8.lm_head.weight is q8.tokens_embed.weight
    keys = q8.state_dict().keys()
    assert not any(k.startswith("lm_head") for k in keys) and "tokens_embed.weight_scale" in keys
    ids = torch.arange(SMALL["vocab_size"]).view(10, -1)
    with torch.no_grad():
        rows, ref_rows = q8.tokens_embed(ids), model.tokens_embed(ids)
    assert rows.dtype == torch.float32
    s = q8.tokens_embed.weight_scale.float()[ids].unsqueeze(-1)
    assert ((rows - ref_rows).abs() <= s / 2 * (1 + 1e-6)).all()  # the lookup: weight rounding only
    x = torch.randn(4, SMALL["n_embd"])
    with torch.no_grad():
        ref = model.lm_head(x)
        got = q8.lm_head(x)
    assert ((got - ref).abs() <= linear_bound(x, q8.tokens_embed.weight, q8.tokens_embed.weight_scale, ref)).all()


def test_the_heads_top_logits_are_exact_so_near_ties_keep_their_order():
    # The kernel's bf16 output would swap near-tied best tokens (greedy and beams would then differ from float32
    # maths on the same int8 weights); the head recomputes each row's top candidates in float32.
    torch.manual_seed(3)
    emb = Int8Embedding.from_embedding(nn.Embedding(5000, 64))
    head = TiedInt8Head(emb)
    x = torch.randn(2, 300, 64) * 3
    with torch.no_grad():
        got = head(x)
        exact = x @ (emb.weight.float() * emb.weight_scale.float()[:, None]).t()
    top = exact.topk(4, dim=-1)
    assert torch.allclose(got.gather(-1, top.indices), top.values, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(-1), exact.argmax(-1))
    deq = emb.weight.float().abs() * emb.weight_scale.float()[:, None]
    assert ((got - exact).abs() <= BF16_EPS * (x.abs() @ deq.t() + exact.abs()) + 1e-6).all()  # the rest: bf16


def test_every_linear_is_int8_and_the_model_matches_its_dequantised_twin(pair):
    model, q8 = pair
    assert q8.is_quantized and not model.is_quantized and q8.dtype == torch.float32
    assert not any(isinstance(m, nn.Linear) for m in q8.modules())
    assert q8.num_parameters() == model.num_parameters()
    int8_bytes = sum(b.numel() for b in q8.buffers() if b.dtype == torch.int8)
    assert int8_bytes > 0.9 * sum(p.numel() for p in model.parameters() if p.dim() == 2) - SMALL["n_positions"] * 64
    # A float model holding exactly q * s: the int8 one differs from it only by the kernel's bf16 rounding.
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in q8.named_modules():
            if isinstance(mod, (Int8Linear, Int8Embedding)):
                twin.get_submodule(name).weight.copy_(mod.weight.float() * mod.weight_scale.float()[:, None])
    ids = torch.randint(0, SMALL["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, twin_logits, got = model(ids).logits, twin(ids).logits, q8(ids).logits
    scale = ref.abs().max()
    assert (got - twin_logits).abs().max() < 0.03 * scale  # bf16 rounding of inputs/outputs only
    assert (got - ref).abs().max() < 0.1 * scale  # and int8 weights: still close to the float model
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_greedy_with_the_cache_equals_full_reruns_and_beam_search_runs(pair):
    _, q8 = pair
    prompt = torch.randint(0, SMALL["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(3))
    out = generate(q8, prompt, max_new_tokens=12)
    ids = prompt
    with torch.no_grad():
        for _ in range(12):  # no cache: the whole sequence each step
            ids = torch.cat([ids, q8(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    beams = generate(q8, prompt, max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert beams.shape == (2, 14) and torch.equal(beams[:, :6], prompt.expand(2, -1))
    batch = torch.randint(0, SMALL["vocab_size"], (3, 5), generator=torch.Generator().manual_seed(4))
    sampled = generate(q8, batch, max_new_tokens=6, do_sample=True, seed=5, top_k=20)
    assert torch.equal(sampled, generate(q8, batch, max_new_tokens=6, do_sample=True, seed=5, top_k=20))


def test_scoring_on_an_int8_model_matches_its_forward(pair):
    from gpt1.inference.scoring import score_tokens

    _, q8 = pair
    seqs = [[5, 17, 99, 3, 250], [8, 9]]
    scores = score_tokens(q8, seqs, precision="fp32")
    with torch.no_grad():
        logp = q8(torch.tensor([seqs[0]])).logits[0].float().log_softmax(-1)
    want = logp[torch.arange(4), torch.tensor(seqs[0][1:])]
    got = torch.tensor([float(x) for x in scores[0].logprobs[-4:]])
    assert torch.allclose(got, want, atol=1e-4)


def test_save_and_load_round_trip_without_quantising_again(pair, tmp_path, monkeypatch):
    _, q8 = pair
    out = q8.save_pretrained(tmp_path / "int8")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "gpt1_int8"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["transformer.tokens_embed.weight"] == "I8" and dtypes["transformer.h.0.mlp.c_fc.weight"] == "I8"
    assert not any(k.startswith("lm_head") for k in dtypes)

    def no_quantising(*_):
        raise AssertionError("an int8 checkpoint was quantised again")

    monkeypatch.setattr(quant, "symmetric_int8", no_quantising)
    for loaded in (GPT.from_pretrained(out), GPT.from_pretrained(out, dtype="int8"), load_model(str(out))):
        assert loaded.is_quantized and loaded.lm_head.weight is loaded.tokens_embed.weight
        for key, value in q8.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="int8 model"):
        GPT.from_pretrained(out, dtype=torch.bfloat16)


def test_from_pretrained_and_load_quantise_a_float_checkpoint(pair, tmp_path):
    model, q8 = pair
    model.save_pretrained(tmp_path / "float")
    for loaded in (GPT.from_pretrained(tmp_path / "float", dtype="int8"), load_model(tmp_path / "float", dtype="int8")):
        assert loaded.is_quantized
        assert torch.equal(loaded.tokens_embed.weight, q8.tokens_embed.weight)
    assert load_model("preset:tiny", dtype="int8").is_quantized
    with pytest.raises(ValueError, match="int4"):
        load_model("preset:tiny", dtype="int4")


def test_training_refuses_an_int8_model(pair, tmp_path):
    _, q8 = pair
    with pytest.raises(ValueError, match="int8 .* cannot be trained"):
        copy.deepcopy(q8).train()
    out = q8.save_pretrained(tmp_path / "int8")
    with pytest.raises(ValueError, match=f"{out}.*cannot be trained"):
        load_model(str(out), trainable=True)


@pytest.fixture(scope="module")
def text_dirs(tmp_path_factory, gpt1_tokenizer):
    """A float model dir with GPT-1's tokenizer and its `gpt1 quantize` copy."""
    root = tmp_path_factory.mktemp("int8-cli")
    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("tiny", initializer_range=0.3)).eval()
    model.save_pretrained(root / "float", tokenizer=gpt1_tokenizer)
    assert main(["quantize", str(root / "float"), str(root / "int8")]) == 0
    return root / "float", root / "int8"


def test_cli_quantize_generate_and_evaluate_with_int8(text_dirs, tmp_path, capsys):
    float_dir, int8_dir = text_dirs
    capsys.readouterr()
    assert json.loads((int8_dir / "config.json").read_text())["quantization_config"]
    assert (int8_dir / "vocab.json").exists()
    args = ["generate", "--prompt", "the quick brown fox", "--greedy", "--max-new-tokens", "8"]
    assert main([*args, "--model", str(float_dir), "--dtype", "int8"]) == 0
    at_load = capsys.readouterr().out
    assert main([*args, "--model", str(int8_dir)]) == 0
    assert capsys.readouterr().out == at_load  # quantised at load == quantised by `gpt1 quantize`
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog . " * 20)
    assert main(["evaluate", "--model", str(float_dir), "--dtype", "int8", "--perplexity", str(text)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(int8_dir), "--perplexity", str(text), "--no-progress"]) == 0


def test_cli_refuses_training_an_int8_model_and_bad_dtypes(text_dirs, tmp_path, capsys):
    _, int8_dir = text_dirs
    data = tmp_path / "jokes.csv"
    data.write_text("Joke\n" + "\n".join(f"why did the chicken cross road {i}" for i in range(20)) + "\n")
    rc = main(["finetune-lm", "--model", str(int8_dir), "--data", str(data), "--text-column", "Joke",
               "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot be trained" in err and len(err.splitlines()) == 1
    rc = main(["generate", "--model", str(int8_dir), "--prompt", "hi", "--dtype", "int9"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--dtype 'int9'" in err and "int8" in err and len(err.splitlines()) == 1


def test_server_continuous_batching_on_an_int8_model(text_dirs, gpt1_tokenizer):
    """The engine's rows joining a running batch get their solo tokens, and the HTTP API answers, with int8."""
    from fastapi.testclient import TestClient

    from engine_driver import engine_step, run_alone
    from gpt1.serving.app import create_app
    from gpt1.serving.engine import Engine, GenRequest

    model = GPT.from_pretrained(text_dirs[1])

    loop = asyncio.new_event_loop()
    prompts = [gpt1_tokenizer.encode(t) for t in ("hello", "once upon a time , there was a king who", "yes")]
    params = [SamplingParams(max_new_tokens=12), SamplingParams(max_new_tokens=8, do_sample=True, seed=3)] * 2
    solo = [run_alone(model, gpt1_tokenizer, ids, p, loop) for ids, p in zip(prompts, params)]
    engine = Engine(model, gpt1_tokenizer, max_batch=3)
    reqs = [GenRequest([ids], p, 1, loop) for ids, p in zip(prompts, params)]
    engine.submit(reqs[0])
    engine_step(engine)
    engine.submit(reqs[1])
    engine.submit(reqs[2])
    while engine.active or engine.waiting:
        engine_step(engine)
    assert [r.choices[0].tokens for r in reqs] == solo
    loop.close()
    with TestClient(create_app(model, gpt1_tokenizer, "int8-test")) as client:
        body = {"prompt": "the weather today is", "max_tokens": 6, "temperature": 0}
        r = client.post("/v1/completions", json=body).json()
        assert r["usage"]["completion_tokens"] == 6
        want = generate(model, torch.tensor([gpt1_tokenizer.encode(body["prompt"])]), max_new_tokens=6)
        assert r["choices"][0]["text"].strip() == gpt1_tokenizer.decode(want[0, -6:].tolist()).strip()
        beams = client.post("/v1/completions", json={**body, "num_beams": 2}).json()
        assert beams["choices"][0]["finish_reason"] == "length"
