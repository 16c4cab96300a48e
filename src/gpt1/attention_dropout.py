"""Causal attention with dropout on the attention probabilities, in query chunks, for CPUs.

PyTorch's fused CPU attention kernels do not support dropout, so `scaled_dot_product_attention(dropout_p=0.1)` falls
back to its plain kernel there: it builds every (T x T) probability matrix, keeps them (and the dropout mask) for the
backward pass, and does the masked upper triangle's work too. GPT-1 trains with attention dropout 0.1, so on a CPU
that path costs ~1.8 GB and a quarter of a `gpt1` training step at 4 x 512. This function computes the same
quantity — softmax(q k^T / sqrt(d) + bias), each probability dropped with probability p and the rest scaled by
1 / (1 - p), times v — one chunk of queries at a time, only against the keys a chunk can see, and saves only q, k, v:
the backward pass recomputes each chunk's probabilities and regenerates its dropout mask from a per-call seed.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

CHUNK = 128  # queries per chunk: large enough for efficient matmuls, small enough to keep the chunk in cache


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype softmax and gradients are computed in: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _chunk_probs(q, k, bias, start: int, end: int, scale: float):
    """Softmax attention probabilities of queries [start, end) over keys [0, end) (causal), in float32 or wider."""
    scores = torch.matmul(q[:, :, start:end], k[:, :, :end].transpose(-1, -2)).to(_acc(q)) * scale
    causal = torch.ones(end - start, end, dtype=torch.bool, device=q.device).tril(diagonal=start)
    scores = scores.masked_fill(~causal, float("-inf"))
    if bias is not None:
        scores = scores + bias[:, :, start:end, :end].to(scores.dtype)
    return torch.softmax(scores, dim=-1)


def _keep_mask(shape, p: float, seed: int, start: int, device, dtype=torch.float32) -> torch.Tensor:
    """The chunk's dropout keep-mask, scaled by 1/(1-p); the same (seed, start) gives the same mask in backward."""
    gen = torch.Generator(device=device).manual_seed(seed + start)
    return (torch.rand(shape, generator=gen, device=device) >= p).to(dtype).mul_(1.0 / (1.0 - p))


class _ChunkedAttentionDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, p: float, seed: int):
        T, scale = q.shape[2], 1.0 / math.sqrt(q.shape[-1])
        out = torch.empty_like(q)
        for start in range(0, T, CHUNK):
            end = min(T, start + CHUNK)
            probs = _chunk_probs(q, k, bias, start, end, scale)
            probs = probs * _keep_mask(probs.shape, p, seed, start, q.device, probs.dtype)
            out[:, :, start:end] = torch.matmul(probs.to(v.dtype), v[:, :, :end])
        ctx.save_for_backward(q, k, v, bias)
        ctx.p, ctx.seed = p, seed
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias = ctx.saved_tensors
        T, scale = q.shape[2], 1.0 / math.sqrt(q.shape[-1])
        acc = _acc(q)
        dq, dk, dv = (torch.zeros_like(t, dtype=acc) for t in (q, k, v))
        for start in range(0, T, CHUNK):
            end = min(T, start + CHUNK)
            probs = _chunk_probs(q, k, bias, start, end, scale)
            keep = _keep_mask(probs.shape, ctx.p, ctx.seed, start, q.device, acc)
            dropped = probs * keep
            g = grad_out[:, :, start:end].to(acc)
            dv[:, :, :end] += torch.matmul(dropped.transpose(-1, -2), g)
            d_probs = torch.matmul(g, v[:, :, :end].transpose(-1, -2).to(acc)) * keep
            d_scores = probs * (d_probs - (d_probs * probs).sum(-1, keepdim=True)) * scale
            dq[:, :, start:end] = torch.matmul(d_scores, k[:, :, :end].to(acc))
            dk[:, :, :end] += torch.matmul(d_scores.transpose(-1, -2), q[:, :, start:end].to(acc))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def causal_attention_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Causal attention of (B, H, T, D) q, k, v with dropout on the probabilities; `bias` is an additive (B, 1, T, T) mask.

    The dropout seed is drawn from torch's global generator, so runs are reproducible and resumable like any dropout.
    """
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return _ChunkedAttentionDropout.apply(q, k, v, bias, float(dropout_p), seed)
