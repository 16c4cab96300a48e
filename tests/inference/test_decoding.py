"""Decoding: the prefill and the KV cache against full forward passes, the step-wise `Decoder`, the decode weight
layout, and the stop-string rules and incremental text that `stream_text` and the server share."""

from __future__ import annotations

import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.inference.decoding import Decoder, TextStream, cut_at_stop, left_pad, prefill, safe_prefix
from gpt1.inference.generate import generate
from gpt1.inference.sampling import process_logits
from gpt1.model.cache import KVCache


# ---- the prefill and the cache -----------------------------------------------------------------------------------------
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


def test_prefill_pads_left_and_repeats_rows(ours):
    """A left-padded row's prefill logits equal the prompt's alone; `repeat` copies rows (and their cache)."""
    a, b = [5, 6, 7, 8, 9], [11, 12]
    ids, mask = left_pad([a, b])
    assert ids.tolist() == [a, [0, 0, 0, *b]] and mask.tolist() == [[1] * 5, [0, 0, 0, 1, 1]]
    both = prefill(ours, ids, mask, capacity=10, repeat=2)
    alone = prefill(ours, torch.tensor([b]), torch.ones(1, 2, dtype=torch.long), capacity=10)
    assert both.logits.shape[0] == 4 and both.cache.batch_size == 4 and both.next_pos.tolist() == [5, 5, 2, 2]
    torch.testing.assert_close(both.logits[2], alone.logits[0], atol=1e-5, rtol=0)
    assert torch.equal(both.logits[2], both.logits[3])


def test_generation_runs_in_bfloat16(ours, small_config, prompt):
    model = GPT(GPT1Config(**small_config)).eval()
    model.load_state_dict(ours.state_dict())
    model.to(torch.bfloat16)
    dec = Decoder(model, prompt(5, 4), max_new_tokens=12)
    out = list(dec)
    # on a CPU the cache (and the attention over it) is float32: PyTorch's bf16 single-query attention is slow there
    assert len(out) == 12 and dec.cache.dtype == dec.cache.keys[0].dtype == torch.float32
    assert dec._logits.dtype == torch.bfloat16  # the rest of the network stays in bf16
    assert process_logits(torch.zeros(1, 1000, dtype=torch.bfloat16), dec.params).dtype == torch.float32


def test_decoder_steps_a_batch(ours, prompt):
    ids = torch.cat([prompt(4, 30), prompt(4, 31)])
    dec = Decoder(ours, ids, max_new_tokens=5)
    steps = [dec.step() for _ in range(5)]
    assert dec.done and torch.equal(torch.stack(steps, 1), generate(ours, ids, max_new_tokens=5)[:, 4:])
    with pytest.raises(RuntimeError, match="finished"):
        dec.step()


def test_decode_layout_changes_memory_order_only(ours, small_config, prompt):
    """fp32 on a CPU: decoding stores matrices (in, out) in memory; same logits and tokens; train() restores it."""
    model = GPT(GPT1Config(**small_config)).eval()
    model.load_state_dict(ours.state_dict())
    ids = prompt(5, 4)
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


# ---- stop strings and text as it grows ---------------------------------------------------------------------------------
def test_cut_at_stop_takes_the_first_stop_string():
    assert cut_at_stop("one two. three\nfour", [".", "\n"]) == ("one two", True)
    assert cut_at_stop("no stop here", ["zz"]) == ("no stop here", False)
    assert cut_at_stop("", []) == ("", False)


@pytest.mark.parametrize(
    "text, stops, safe",
    [
        ("the quick brown", (), "the quick"),  # the last word may still grow
        ("the quick brown ", (), "the quick brown"),  # ... or lose the space before it to clean-up
        ("oneword", (), ""),
        ("say the EN", (" END",), "say the"),
        ("say the EN x", (" END",), "say the"),  # the settled part ends as " END" begins: held back
    ],
)
def test_safe_prefix_holds_back_what_may_change(text, stops, safe):
    assert safe_prefix(text, stops) == safe


def test_text_stream_streams_its_safe_part_then_the_rest(gpt1_tokenizer):
    tok = gpt1_tokenizer
    ids = tok.encode("the cat sat on the mat . the end")
    stream = TextStream(tok, stops=[" end"])
    pieces = []
    for n in range(1, len(ids) + 1):
        if stream.update(ids[:n]):
            break
        pieces.append(stream.pop_safe())
    pieces.append(stream.pop_rest())
    whole = tok.decode(ids)
    assert stream.stopped and "".join(pieces) == whole[: whole.index(" end")]
    assert sum(bool(p) for p in pieces) > 2  # it came in pieces


def test_text_stream_with_context_reads_the_join(gpt1_tokenizer):
    """After a prompt's last tokens, a completion's text starts as it reads in the whole text (here with a space)."""
    tok = gpt1_tokenizer
    prompt, new = tok.encode("once upon a"), tok.encode("time")
    with_context = TextStream(tok, context=prompt)
    with_context.update(new)
    assert with_context.text == tok.decode(prompt + new)[len(tok.decode(prompt)) :] == " time"
    alone = TextStream(tok)
    alone.update(new)
    assert alone.text == "time"
