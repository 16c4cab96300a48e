"""Generation against transformers' OpenAIGPT `generate` on the same random weights, plus the processors' semantics.

The HF comparisons use a small GPT-1-shaped network (2 layers, width 64, vocab 1000; weights drawn with std 0.3 so
greedy does not collapse onto one repeated token): exactness does not depend on the width, and HF's no-cache
`generate` over 200 tokens at the full config would dominate CI time.
"""

from __future__ import annotations

import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import ours_to_hf
from gpt1.inference.generate import (
    Decoder,
    apply_repetition_penalty,
    apply_temperature,
    ban_repeated_ngrams,
    generate,
    generate_text,
    stream_text,
    top_k_filter,
    top_p_filter,
)
from gpt1.model.gpt import KVCache

SMALL = dict(vocab_size=1000, n_positions=256, n_embd=64, n_layer=2, n_head=4, initializer_range=0.3)


@pytest.fixture(scope="module")
def ours() -> GPT:
    torch.manual_seed(0)
    return GPT(GPT1Config(**SMALL)).eval()


@pytest.fixture(scope="module")
def hf(ours):
    transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")
    transformers.logging.set_verbosity_error()
    cfg = transformers.OpenAIGPTConfig(**{k: v for k, v in SMALL.items() if k != "initializer_range"})
    model = transformers.OpenAIGPTLMHeadModel(cfg).eval()
    missing, unexpected = model.load_state_dict(ours_to_hf(ours.state_dict()), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    assert model.lm_head.weight.data_ptr() == model.transformer.tokens_embed.weight.data_ptr()  # tied, so loaded
    return model


def _prompt(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, SMALL["vocab_size"], (1, n), generator=torch.Generator().manual_seed(seed))


# ---- greedy and beam search against HF ------------------------------------------------------------------------------
def test_greedy_matches_hf_for_200_tokens(ours, hf):
    ids = _prompt(7, 1)
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=200, do_sample=False, pad_token_id=0)
    got = ours.generate(ids, max_new_tokens=200)
    assert got.shape == ref.shape == (1, 207)
    assert len(set(got[0, 7:].tolist())) > 10  # a non-degenerate continuation, so the comparison means something
    assert torch.equal(got, ref)


def test_left_padded_batch_matches_each_prompt_alone(ours, hf):
    """Prompts of 3, 11 and 20 tokens in one left-padded batch give what HF gives for each prompt on its own.

    (HF 4.57's generate passes no position_ids to OpenAIGPT, so in a left-padded batch its positions shift with the
    padding; we use per-row positions, so padding never changes a row, and compare with unpadded HF runs.)
    """
    prompts = [_prompt(n, 10 + n)[0] for n in (3, 11, 20)]
    T = max(len(p) for p in prompts)
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :], mask[i, T - len(p) :] = p, 1
    got = generate(ours, ids, mask, max_new_tokens=200)
    assert torch.equal(got[:, :T], ids)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(p[None], max_new_tokens=200, do_sample=False, pad_token_id=0)
        assert torch.equal(got[i, T:], ref[0, len(p) :]), f"row {i}"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(num_return_sequences=3, eos_token_id=[5, 17, 50, 311], length_penalty=0.7),
        dict(eos_token_id=[5, 17, 50, 311], length_penalty=2.0, no_repeat_ngram_size=2, repetition_penalty=1.3),
    ],
)
def test_beam_search_matches_hf_sequences_and_scores(ours, hf, kwargs):
    ids = torch.cat([_prompt(6, 2), _prompt(6, 3)])
    with torch.no_grad():
        ref = hf.generate(
            ids,
            max_new_tokens=40,
            num_beams=4,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
    got = generate(ours, ids, max_new_tokens=40, num_beams=4, pad_token_id=0, return_dict_in_generate=True, **kwargs)
    assert torch.equal(got.sequences, ref.sequences)
    assert torch.allclose(got.sequences_scores, ref.sequences_scores, atol=1e-5, rtol=0)


# ---- the cache -------------------------------------------------------------------------------------------------------
def test_cached_logits_match_uncached_at_every_step():
    """Prefill + one-token steps on the KV cache give the full forward's logits (left-padded batch, small preset)."""
    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("small")).eval()
    T, steps = 9, 40
    seq = torch.randint(0, 40478, (2, T + steps), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(seq)
    mask[1, :4] = 0  # row 1: left padding
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        full = model(seq, attention_mask=mask, position_ids=positions).logits
        cache = KVCache(model.config, 2, T + steps, model.device, model.dtype)
        cached = [model(seq[:, :T], attention_mask=mask[:, :T], position_ids=positions[:, :T], cache=cache).logits]
        for t in range(T, T + steps):
            cached.append(model(seq[:, t : t + 1], position_ids=positions[:, t : t + 1], cache=cache).logits)
    cached = torch.cat(cached, 1)
    real = mask.bool()
    assert (cached - full)[real].abs().max().item() <= 1e-4
    assert cache.length == T + steps


def test_generation_runs_in_bfloat16(ours):
    model = GPT(GPT1Config(**SMALL)).eval()
    model.load_state_dict(ours.state_dict())
    model.to(torch.bfloat16)
    dec = Decoder(model, _prompt(5, 4), max_new_tokens=12)
    out = list(dec)
    # on a CPU the cache (and the attention over it) is float32: PyTorch's bf16 single-query attention is slow there
    assert len(out) == 12 and dec.cache.dtype == dec.cache.keys[0].dtype == torch.float32
    assert dec._logits.dtype == torch.bfloat16  # the rest of the network stays in bf16
    assert dec.process(torch.zeros(1, 1000, dtype=torch.bfloat16)).dtype == torch.float32


# ---- processors -------------------------------------------------------------------------------------------------------
def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False]]
    assert torch.equal(out[torch.isfinite(out)], torch.tensor([3.0, 2.0]))
    assert torch.isfinite(top_k_filter(logits, 99)).all()


@pytest.mark.parametrize(
    "p, kept", [(0.5, 1), (0.79, 2), (0.8, 2), (0.81, 3), (0.95, 3), (0.96, 4), (1e-6, 1), (1.0, 4)]
)
def test_top_p_keeps_the_minimal_nucleus(p, kept):
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    out = top_p_filter(probs.log(), p)
    keep = torch.isfinite(out)[0]
    assert int(keep.sum()) == kept
    order = [1, 3, 2, 0]  # most probable first: the kept set is always a prefix of this order
    assert keep[order[:kept]].all() and not keep[order[kept:]].any()


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, -2.0, 4.0]])
    assert torch.equal(apply_temperature(logits, 0.5), logits * 2)
    assert torch.equal(apply_temperature(logits, 1.0), logits)


def test_repetition_penalty_as_hf_defines_it():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[0, 1, 0]])
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    # Padding positions (mask 0) do not count, even when they share an id with nothing real.
    out = apply_repetition_penalty(logits, torch.tensor([[3, 0]]), 2.0, mask=torch.tensor([[0, 1]]))
    assert torch.equal(out, torch.tensor([[1.0, -2.0, 1.0, -1.0]]))


def test_no_repeat_ngram_bans_completions():
    ids = torch.tensor([[1, 2, 3, 1, 2, 4, 1]])
    out = ban_repeated_ngrams(torch.zeros(1, 6), ids, 2)
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [2]  # "1 2" was seen: 2 may not follow 1 again
    out = ban_repeated_ngrams(torch.zeros(1, 6), ids, 3)
    assert torch.isinf(out).sum() == 0  # "2 1" never seen before the last token
    out = ban_repeated_ngrams(torch.zeros(1, 6), torch.tensor([[1, 2, 3, 1, 2]]), 3)
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [3]


def test_processors_match_hf_on_random_scores():
    lp = pytest.importorskip("transformers.generation.logits_process")
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 500, generator=g) * 3
    ids = torch.randint(0, 500, (3, 40), generator=g)
    ids[:, -2:] = ids[:, 5:7]  # make sure the last bigram occurred before
    assert torch.equal(top_k_filter(scores, 17), lp.TopKLogitsWarper(17)(ids, scores))
    for p in (0.3, 0.9):
        assert torch.equal(torch.isfinite(top_p_filter(scores, p)), torch.isfinite(lp.TopPLogitsWarper(p)(ids, scores)))
    assert torch.equal(
        apply_repetition_penalty(scores, ids, 1.3), lp.RepetitionPenaltyLogitsProcessor(1.3)(ids, scores)
    )
    for n in (1, 2, 3):
        assert torch.equal(ban_repeated_ngrams(scores, ids, n), lp.NoRepeatNGramLogitsProcessor(n)(ids, scores.clone()))


# ---- sampling, stopping, batching ------------------------------------------------------------------------------------
def test_sampling_is_reproducible_with_a_seed(ours):
    ids = torch.cat([_prompt(5, 7), _prompt(5, 8)])
    kw = dict(max_new_tokens=30, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, num_return_sequences=2)
    a, b = generate(ours, ids, seed=123, **kw), generate(ours, ids, seed=123, **kw)
    c = generate(ours, ids, seed=124, **kw)
    assert a.shape == (4, 35) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the two samples of one prompt differ
    # top_k=1 leaves one candidate: sampling is then greedy.
    assert torch.equal(
        generate(ours, ids, max_new_tokens=15, do_sample=True, top_k=1, seed=1), generate(ours, ids, max_new_tokens=15)
    )


def test_rows_stop_independently_at_eos(ours):
    ids = torch.cat([_prompt(6, 21), _prompt(6, 22)])
    free = generate(ours, ids, max_new_tokens=30)
    row0, row1 = free[0, 6:].tolist(), free[1, 6:].tolist()
    # eos: a token row 0 generates (first at step j) that row 1 never does.
    j = next(j for j, t in enumerate(row0) if t not in row1 and t not in row0[:j] and j >= 2)
    out = generate(ours, ids, max_new_tokens=30, eos_token_id=row0[j], pad_token_id=999, return_dict_in_generate=True)
    seqs = out.sequences
    assert torch.equal(seqs[0, : 6 + j + 1], free[0, : 6 + j + 1]) and (seqs[0, 6 + j + 1 :] == 999).all()
    assert torch.equal(seqs[1], free[1])
    assert out.num_generated.tolist() == [j + 1, 30]


def test_all_rows_stopping_ends_early(ours):
    ids = _prompt(6, 21)
    new = generate(ours, ids, max_new_tokens=30)[0, 6:].tolist()
    j = next(j for j, t in enumerate(new) if t not in new[:j] and j >= 2)  # first step emitting a fresh token
    assert generate(ours, ids, max_new_tokens=30, eos_token_id=new[j]).shape == (1, 6 + j + 1)


def test_decoder_steps_a_batch(ours):
    ids = torch.cat([_prompt(4, 30), _prompt(4, 31)])
    dec = Decoder(ours, ids, max_new_tokens=5)
    steps = [dec.step() for _ in range(5)]
    assert dec.done and torch.equal(torch.stack(steps, 1), generate(ours, ids, max_new_tokens=5)[:, 4:])
    with pytest.raises(RuntimeError, match="finished"):
        dec.step()


# ---- limits and bad values --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_p=0.0, do_sample=True), r"top_p=0.0 is outside the accepted range \(0, 1\]"),
        (dict(top_p=1.5, do_sample=True), r"top_p=1.5 is outside the accepted range \(0, 1\]"),
        (dict(temperature=-1.0, do_sample=True), r"temperature=-1.0 .* >= 0"),
        (dict(max_new_tokens=0), r"max_new_tokens=0 .* >= 1"),
        (dict(num_beams=0), r"num_beams=0 .* >= 1"),
        (dict(top_k=-1, do_sample=True), r"top_k=-1 .* >= 0 \(0 or None: no top-k\)"),  # 0 = off, as in the server
        (dict(temperature=float("nan"), do_sample=True), r"temperature=nan is invalid"),
        (dict(repetition_penalty=float("inf")), r"repetition_penalty=inf is invalid"),
        (dict(repetition_penalty=0.0), r"repetition_penalty=0.0 .* > 0"),
        (dict(num_return_sequences=2), r"num_return_sequences=2 needs do_sample"),
        (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences=3 is more than num_beams=2"),
        (dict(eos_token_id=1000), r"eos_token_id=1000 is outside the vocabulary \[0, 1000\)"),
        (dict(stop="x"), r"stop strings need the tokenizer"),
        (dict(max_new_tokens=256), r"max_new_tokens=256 leaves no room .* at most 255"),
        (
            dict(max_new_tokens=250),
            r"prompt of 10 tokens \+ max_new_tokens=250 exceeds .* 256 positions.*truncate_left",
        ),
    ],
)
def test_bad_values_are_named(ours, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(ours, _prompt(10, 0), **{"max_new_tokens": 5, **kwargs})


def test_empty_prompt_needs_a_start_token(ours):
    with pytest.raises(ValueError, match="empty; GPT-1 has no start-of-text token"):
        generate(ours, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        generate(ours, torch.tensor([[1, 2]]), attention_mask=torch.tensor([[0, 0]]))


def test_truncate_left_keeps_the_last_tokens(ours):
    ids = _prompt(60, 9)
    got = generate(ours, ids, max_new_tokens=200, truncate_left=True)
    assert torch.equal(got, generate(ours, ids[:, -56:], max_new_tokens=200))


# ---- text level (real GPT-1 vocabulary from ../shared) -----------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model():
    torch.manual_seed(0)
    return GPT(GPT1Config.from_preset("tiny", initializer_range=0.3)).eval()


def test_generate_text_and_stream_agree(text_model, gpt1_tokenizer):
    tok = gpt1_tokenizer
    kw = dict(max_new_tokens=25, do_sample=True, seed=3, top_p=0.9)
    text = generate_text(text_model, tok, "the quick brown fox", **kw)
    pieces = list(stream_text(text_model, tok, "the quick brown fox", **kw))
    assert isinstance(text, str) and text and len(pieces) > 3
    assert "".join(pieces) == text
    ids = generate(text_model, torch.tensor([tok.encode("the quick brown fox")]), **kw)
    assert text == tok.decode(ids[0, 4:].tolist())
    many = generate_text(text_model, tok, ["a", "the quick brown fox"], num_return_sequences=2, **kw)
    assert len(many) == 4 and all(isinstance(t, str) for t in many)


def test_stop_strings_cut_the_text(text_model, gpt1_tokenizer):
    tok = gpt1_tokenizer
    free = generate_text(text_model, tok, "once upon a time", max_new_tokens=30)
    words = free.split()
    stop = words[3]
    expected = free[: free.find(stop)]
    assert generate_text(text_model, tok, "once upon a time", max_new_tokens=30, stop=[stop, "zzzz"]) == expected
    assert "".join(stream_text(text_model, tok, "once upon a time", max_new_tokens=30, stop=stop)) == expected
    out = generate(
        text_model, torch.tensor([tok.encode("once upon a time")]), max_new_tokens=30, stop=stop, tokenizer=tok
    )
    assert out.shape[1] < 4 + 30  # generation itself stopped, not just the text


def test_empty_text_prompt_with_start_token(text_model, gpt1_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        generate_text(text_model, gpt1_tokenizer, "", max_new_tokens=3)
    assert isinstance(generate_text(text_model, gpt1_tokenizer, "", max_new_tokens=3, start_token_id=0), str)


def test_cli_generate(tmp_path, text_model, gpt1_tokenizer, capsys):
    from gpt1.cli.verbs import main

    text_model.save_pretrained(tmp_path, tokenizer=gpt1_tokenizer)
    args = ["generate", "--model", str(tmp_path), "--prompt", "the quick brown fox", "--max-new-tokens", "12"]
    assert main(args + ["--greedy"]) == 0
    greedy = capsys.readouterr().out.strip()
    assert greedy == generate_text(text_model, gpt1_tokenizer, "the quick brown fox", max_new_tokens=12)
    assert main(args + ["--seed", "5", "--stream"]) == 0
    streamed = capsys.readouterr().out.strip()
    assert main(args + ["--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == streamed
    assert main(args + ["--num-beams", "3", "--num-samples", "2", "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.count("=== prompt 1, sample") == 2
    assert main(args + ["--top-p", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--top-p 1.5 is outside the accepted range (0, 1]" in err  # the flag, not top_p=


def test_decode_layout_changes_memory_order_only(ours):
    """fp32 on a CPU: decoding stores matrices (in, out) in memory; same logits and tokens; train() restores it."""
    model = GPT(GPT1Config(**SMALL)).eval()
    model.load_state_dict(ours.state_dict())
    ids = _prompt(5, 4)
    before = model(ids).logits
    first = model.generate(ids, max_new_tokens=10)
    w = model.h[0].attn.c_attn.weight
    assert w.stride() == (1, w.shape[0]) and model.lm_head.weight is model.tokens_embed.weight
    # BLAS may sum in another order for the other layout: equal to rounding, same greedy tokens
    assert torch.allclose(model(ids).logits, before, atol=1e-5)
    assert torch.equal(model.generate(ids, max_new_tokens=10), first)
    model.train()
    assert w.is_contiguous() and model.tokens_embed.weight.is_contiguous()
    loss = model(ids, labels=ids).loss
    loss.backward()  # trainable again: no inference tensors left behind
    assert w.grad is not None
