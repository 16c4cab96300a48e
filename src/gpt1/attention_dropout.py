"""Causal attention with dropout on the attention probabilities, in query chunks, for CPUs.

PyTorch's fused CPU attention kernels do not support dropout, so `scaled_dot_product_attention(dropout_p=0.1)` falls
back to its plain kernel there: it builds every (T x T) probability matrix, keeps them (and the dropout mask) for the
backward pass, and does the masked upper triangle's work too. GPT-1 trains with attention dropout 0.1, so on a CPU
that path costs ~1.8 GB and a quarter of a `gpt1` training step at 4 x 512. This function computes the same
quantity — softmax(q k^T / sqrt(d) + bias), each probability dropped with probability p and the rest scaled by
1 / (1 - p), times v — one chunk of queries at a time, only against the keys a chunk can see, and saves only q, k, v
and the boolean dropout masks: the backward pass recomputes each chunk's probabilities.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .dropout import drop_mask, quantized_p

CHUNK = 128  # queries per chunk: large enough for efficient matmuls, small enough to keep the chunk in cache


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype softmax and gradients are computed in: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _chunk_probs(q, k, bias, start: int, end: int, scale: float):
    """Softmax attention probabilities of queries [start, end) over keys [0, end) (causal), in float32 or wider."""
    scores = torch.matmul(q[:, :, start:end], k[:, :, :end].transpose(-1, -2)).to(_acc(q)).mul_(scale)
    # keys before `start` are visible to every query of the chunk: only the diagonal block needs the causal mask
    future = torch.ones(end - start, end - start, dtype=torch.bool, device=q.device).triu(diagonal=1)
    scores[..., start:end].masked_fill_(future, float("-inf"))
    if bias is not None:
        scores = scores + bias[:, :, start:end, :end].to(scores.dtype)
    return torch.softmax(scores, dim=-1)


def _drop_mask(shape, p: float, seed: int, start: int, device) -> torch.Tensor:
    """The chunk's dropout mask (True = dropped), a function of (seed, start) alone."""
    gen = torch.Generator(device=device).manual_seed(seed + start)
    return drop_mask(shape, p, generator=gen, device=device)


def _keep_mask(shape, p: float, seed: int, start: int, device, dtype=torch.float32) -> torch.Tensor:
    """The chunk's keep-mask scaled by 1/(1-p), as the plain formula multiplies by it."""
    return (~_drop_mask(shape, p, seed, start, device)).to(dtype).mul_(1.0 / (1.0 - quantized_p(p)))


def _dropout_(probs: torch.Tensor, drop: Optional[torch.Tensor], p: float) -> torch.Tensor:
    """Zero the dropped entries of `probs` and rescale the rest, in place."""
    return probs if drop is None else probs.masked_fill_(drop, 0.0).mul_(1.0 / (1.0 - quantized_p(p)))


class _ChunkedAttentionDropout(torch.autograd.Function):
    """Matmuls run in the inputs' dtype (bf16 under autocast), softmax and its gradient in float32 or wider. The
    boolean dropout masks (1 byte per kept-triangle entry, ~8 MB per `gpt1` layer at 4 x 512) are kept for the
    backward pass: regenerating them there cost more than a third of this function's time."""

    @staticmethod
    def forward(ctx, q, k, v, bias, p: float, seed: int):
        T, scale = q.shape[2], 1.0 / math.sqrt(q.shape[-1])
        out = torch.empty_like(q)
        drops = []
        for start in range(0, T, CHUNK):
            end = min(T, start + CHUNK)
            probs = _chunk_probs(q, k, bias, start, end, scale)
            drop = _drop_mask(probs.shape, p, seed, start, q.device) if p > 0 else None
            out[:, :, start:end] = torch.matmul(_dropout_(probs, drop, p).to(v.dtype), v[:, :, :end])
            drops.append(drop)
        ctx.save_for_backward(q, k, v, bias, *drops)
        ctx.p = p
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, *drops = ctx.saved_tensors
        T, scale, p = q.shape[2], 1.0 / math.sqrt(q.shape[-1]), ctx.p
        low, acc = q.dtype, _acc(q)
        grad_out = grad_out.to(low)
        dq = torch.empty_like(q)
        dk, dv = (torch.zeros_like(t, dtype=acc) for t in (k, v))  # summed over chunks: kept in float32 or wider
        for i, start in enumerate(range(0, T, CHUNK)):
            end = min(T, start + CHUNK)
            probs = _chunk_probs(q, k, bias, start, end, scale)
            g = grad_out[:, :, start:end]
            dropped = _dropout_(probs.clone(), drops[i], p)
            dv[:, :, :end] += torch.matmul(dropped.to(low).transpose(-1, -2), g)
            d_probs = _dropout_(torch.matmul(g, v[:, :, :end].transpose(-1, -2)).to(acc), drops[i], p)
            d_scores = (probs * (d_probs - (d_probs * probs).sum(-1, keepdim=True)) * scale).to(low)
            dq[:, :, start:end] = torch.matmul(d_scores, k[:, :, :end])
            dk[:, :, :end] += torch.matmul(d_scores.transpose(-1, -2), q[:, :, start:end])
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


def causal_attention_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Causal attention of (B, H, T, D) q, k, v with dropout on the probabilities; `bias` is an additive (B, 1, T, T) mask.

    The dropout seed is drawn from torch's global generator, so runs are reproducible and resumable like any dropout.
    """
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return _ChunkedAttentionDropout.apply(q, k, v, bias, float(dropout_p), seed)
