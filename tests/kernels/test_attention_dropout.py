"""Chunked CPU attention with dropout: the same function (values and gradients) as the plain formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpt1 import GPT, GPT1Config
from gpt1.kernels.cpu.attention import CHUNK, _ChunkedAttentionDropout, causal_attention_dropout, chunk_keep_mask
from gpt1.kernels.cpu.dropout import quantized_p


def reference(q, k, v, p, seed, bias=None):
    """softmax(q k^T / sqrt(d) + causal + bias) with the chunks' own keep-masks, then @ v: the plain formula."""
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    if bias is not None:
        scores = scores + bias
    probs = scores.softmax(-1)
    if p > 0:
        keep = torch.zeros_like(probs)
        for start in range(0, T, CHUNK):
            end = min(T, start + CHUNK)
            keep[:, :, start:end, :end] = chunk_keep_mask((*probs.shape[:2], end - start, end), p, seed, start)
        probs = probs * keep / (1 - quantized_p(p))
    return probs @ v


@pytest.mark.parametrize("T", [7, CHUNK, 300])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_values_and_gradients_match_the_formula(T, p):
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.zeros(2, 1, T, T, dtype=torch.float64)
    bias[1, :, :, :3] = torch.finfo(torch.float64).min  # row 1 has 3 padded keys
    got = _ChunkedAttentionDropout.apply(q, k, v, bias, p, 1234)
    want = reference(q, k, v, p, 1234, bias)
    assert torch.allclose(got, want, atol=1e-10)
    w = torch.randn(got.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((got * w).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * w).sum(), (q, k, v))
    for a, b in zip(grads, want_grads):
        assert torch.allclose(a, b, atol=1e-9)


def test_without_dropout_equals_sdpa():
    q, k, v = (torch.randn(2, 4, 200, 32) for _ in range(3))
    got = causal_attention_dropout(q, k, v, 0.0)
    assert (got - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max() < 1e-5


def test_dropout_statistics_and_seeding():
    torch.manual_seed(0)
    q, k, v = torch.zeros(1, 1, 256, 8), torch.zeros(1, 1, 256, 8), torch.ones(1, 1, 256, 8)
    out = causal_attention_dropout(q, k, v, 0.5)  # uniform probabilities: the output is the kept share, rescaled
    assert abs(out[0, 0, 128:, 0].mean().item() - 1.0) < 0.05
    torch.manual_seed(0)
    assert torch.equal(out, causal_attention_dropout(q, k, v, 0.5))


def test_model_uses_it_in_cpu_training_and_stays_deterministic():
    cfg = GPT1Config.from_preset("tiny")
    torch.manual_seed(0)
    model = GPT(cfg).train()
    ids = torch.randint(0, cfg.vocab_size, (2, 64))
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append((loss.item(), model.h[0].attn.c_attn.weight.grad.clone()))
        model.zero_grad()
    assert losses[0][0] == losses[1][0] and torch.equal(losses[0][1], losses[1][1])
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_bfloat16_matches_the_float64_formula_within_bf16_rounding():
    """Under autocast the inputs are bf16: matmuls run in bf16, softmax and its gradient in float32."""
    g = torch.Generator().manual_seed(5)
    q64, k64, v64 = (torch.randn(2, 3, 300, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    q, k, v = (t.detach().to(torch.bfloat16).requires_grad_() for t in (q64, k64, v64))
    got = _ChunkedAttentionDropout.apply(q, k, v, None, 0.1, 7)
    want = reference(q64, k64, v64, 0.1, 7)
    assert got.dtype == torch.bfloat16 and (got.double() - want).abs().max() < 0.05
    w = torch.randn(got.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((got.double() * w).sum(), (q, k, v))
    for a, b in zip(grads, torch.autograd.grad((want * w).sum(), (q64, k64, v64))):
        assert a.dtype == torch.bfloat16 and (a.double() - b).abs().max() < 0.05 * b.abs().max()
