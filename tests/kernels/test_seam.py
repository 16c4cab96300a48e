"""The kernel seam (`gpt1.kernels`): each function equals its plain PyTorch path, whichever kernel it picks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gpt1.kernels as kernels
from gpt1.kernels.cpu import decode_layout
from gpt1.kernels.cpu.attention import causal_attention_dropout
from gpt1.kernels.cpu.dropout import cpu_dropout


def qkv(B=2, H=3, T=20, D=8, past=0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=dtype)
    k, v = (torch.randn(B, H, past + T, D, generator=g, dtype=dtype) for _ in range(2))
    return q, k, v


def test_attention_without_dropout_is_sdpa():
    q, k, v = qkv()
    assert torch.allclose(kernels.attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))
    bias = torch.zeros(2, 1, 20, 20).masked_fill_(torch.rand(2, 1, 20, 20) < 0.3, -1e9)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert torch.allclose(kernels.attention(q, k, v, bias), want)


def test_attention_with_a_past_and_wider_cached_keys():
    """Queries after `past` cached keys see every key (no causal triangle); keys stored wider than q (a float32
    cache of a bf16 model) make attention run in their dtype and the result come back in q's."""
    q, k, v = qkv(T=1, past=9)
    assert torch.allclose(kernels.attention(q, k, v, past=9), F.scaled_dot_product_attention(q, k, v))
    got = kernels.attention(q.bfloat16(), k, v, past=9)
    want = F.scaled_dot_product_attention(q.bfloat16().float(), k, v).bfloat16()
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_attention_with_dropout_on_a_cpu_is_the_chunked_kernel():
    q, k, v = qkv(T=40)
    torch.manual_seed(3)
    got = kernels.attention(q, k, v, dropout_p=0.1)
    torch.manual_seed(3)
    assert torch.equal(got, causal_attention_dropout(q, k, v, 0.1))


def test_dropout_picks_the_cpu_source_only_while_training():
    x = torch.randn(64, 33)
    assert torch.equal(kernels.dropout(x, 0.1, training=False), x)
    assert torch.equal(kernels.dropout(x, 0.0), x)
    assert torch.equal(kernels.dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(4)
    got = kernels.dropout(x, 0.1)
    torch.manual_seed(4)
    assert torch.equal(got, cpu_dropout(x, 0.1))


def test_cache_dtype():
    assert kernels.cache_dtype(torch.bfloat16, "cpu") == torch.float32
    assert kernels.cache_dtype(torch.float32, "cpu") == torch.float32
    assert kernels.cache_dtype(torch.bfloat16, "meta") == torch.bfloat16


def test_decode_layout_changes_memory_order_only():
    w = torch.nn.Parameter(torch.randn(6, 4))
    x = torch.randn(1, 4)
    before = x @ w.t()
    kernels.prepare_decoding(w, lambda: [w])
    assert decode_layout.is_transposed(w) and w.stride() == (1, 6) and w.shape == (6, 4)
    assert torch.allclose(x @ w.t(), before)
    kernels.prepare_decoding(w, lambda: pytest.fail("already arranged: nothing to list"))
    kernels.prepare_training([w])
    assert w.is_contiguous()
    bf = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.bfloat16))
    kernels.prepare_decoding(bf, lambda: [bf])
    assert bf.is_contiguous()  # bf16 keeps the usual order
