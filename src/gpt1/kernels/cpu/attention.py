"""Causal attention with dropout on the attention probabilities, in query chunks, for CPUs.

PyTorch's fused CPU attention kernels do not support dropout, so `scaled_dot_product_attention(dropout_p=0.1)` falls
back to its plain kernel there: it builds every (T x T) probability matrix, keeps them (and the dropout mask) for the
backward pass, and does the masked upper triangle's work too. GPT-1 trains with attention dropout 0.1, so on a CPU
that path holds ~1.8 GB at `gpt1` 4 x 512 and takes a large share of each step (benchmarks/train.py). This
computes the same quantity — softmax(q k^T / sqrt(d) + bias), each probability dropped with probability p and the
rest scaled by 1 / (1 - p), times v — one chunk of queries at a time, only against the keys a chunk can see.

Every pass over a (T x T) matrix costs about as much as a small matmul here, so the work on those matrices is kept
to the few passes the formula needs: the two scalings move onto the (T x D) operands (q by 1/sqrt(d), v by
1 / (1 - p)); the probabilities are computed in the inputs' dtype (softmax itself accumulates in float32) and, in
bf16, kept for backward with the 1-byte dropout masks, so backward recomputes nothing; masks are applied as
multiplications (see dropout.py); and softmax's backward uses FlashAttention's identity
sum_j dP_ij P_ij = dO_i . O_i, a (T x D) product instead of a (T x T) one.
"""

from __future__ import annotations

import math

import torch

from gpt1.kernels.cpu.dropout import apply_mask, draw_seed, keep_mask, quantized_p

CHUNK = 128  # queries per chunk: large enough for efficient matmuls, small enough to keep the chunk in cache


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype row sums and gradient accumulators use: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _chunk_probs(q_scaled, k, bias, start: int, end: int) -> torch.Tensor:
    """Softmax attention probabilities of queries [start, end) over keys [0, end) (causal), in the inputs' dtype."""
    scores = torch.matmul(q_scaled[:, :, start:end], k[:, :, :end].transpose(-1, -2))
    # keys before `start` are visible to every query of the chunk: only the diagonal block needs the causal mask
    future = torch.full((end - start, end - start), float("-inf"), dtype=scores.dtype, device=scores.device)
    scores[..., start:end].add_(future.triu_(diagonal=1))  # an add: boolean-mask kernels are slow on CPUs
    if bias is not None:
        scores = scores + bias[:, :, start:end, :end].to(scores.dtype)
    return torch.softmax(scores, dim=-1)


def _scaled_contiguous(t: torch.Tensor, scale: float) -> torch.Tensor:
    """t * scale as a contiguous tensor, in one pass (an elementwise op alone would keep t's strides)."""
    return torch.mul(t, scale, out=torch.empty(t.shape, dtype=t.dtype, device=t.device))


def chunk_keep_mask(shape, p: float, seed: int, start: int) -> torch.Tensor:
    """The uint8 keep-mask of the chunk whose first query is `start`: a function of (seed, start)."""
    return keep_mask(shape, p, (seed, start))


class _ChunkedAttentionDropout(torch.autograd.Function):
    """Matmuls and the probabilities in the inputs' dtype, row sums and the dk, dv accumulators in float32 (or wider).

    Saved for backward: the dropout masks (1 byte per entry of the (T x T) kept triangle) and, for 2-byte dtypes
    (bf16 under autocast), the probabilities (2 bytes an entry): ~24 MB per `gpt1` layer at 4 x 512. For float32
    inputs the probabilities would take twice that (~0.4 GB over 12 layers), so backward recomputes them instead.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, p: float, seed: int):
        T, scale = q.shape[2], 1.0 / math.sqrt(q.shape[-1])
        keep_scale = 1.0 / (1.0 - quantized_p(p)) if p > 0 else 1.0
        # (B, H, T, D)-contiguous, so that every chunk's matmul reads its slices without copying them (q, k, v are
        # usually transposed views of the qkv projection)
        q_scaled, v_scaled, k = _scaled_contiguous(q, scale), _scaled_contiguous(v, keep_scale), k.contiguous()
        out = torch.empty_like(q)  # q's layout: for the usual (B, T, H, D) one, merging the heads afterwards is a view
        probs, keeps = [], []
        for start in range(0, T, CHUNK):
            end = min(T, start + CHUNK)
            chunk = _chunk_probs(q_scaled, k, bias, start, end)
            keep = chunk_keep_mask(chunk.shape, p, seed, start) if p > 0 else None
            kept = chunk if keep is None else apply_mask(chunk, keep)
            out[:, :, start:end] = torch.matmul(kept, v_scaled[:, :, :end])
            probs.append(chunk if q.element_size() <= 2 else None)
            keeps.append(keep)
        ctx.save_for_backward(q_scaled, k, v_scaled, out, bias, *probs, *keeps)
        ctx.scale, ctx.keep_scale, ctx.chunks = scale, keep_scale, len(probs)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q_scaled, k, v_scaled, out, bias, *saved = ctx.saved_tensors
        probs, keeps = saved[: ctx.chunks], saved[ctx.chunks :]
        low, acc = q_scaled.dtype, _acc(q_scaled)
        g = grad_out.to(low).contiguous()
        # sum_j dP_ij P_ij = g_i . out_i: softmax's backward row sums without a (T x T) product
        row_dot = (g.to(acc) * out.to(acc)).sum(-1, keepdim=True).to(low)
        dq = torch.empty_like(q_scaled)
        dk, dv = (torch.zeros_like(t, dtype=acc) for t in (k, v_scaled))  # summed over chunks
        for i, start in enumerate(range(0, q_scaled.shape[2], CHUNK)):
            end = min(q_scaled.shape[2], start + CHUNK)
            chunk, keep, g_chunk = probs[i], keeps[i], g[:, :, start:end]
            if chunk is None:
                chunk = _chunk_probs(q_scaled, k, bias, start, end)
            kept = chunk if keep is None else apply_mask(chunk, keep)
            dv[:, :, :end] += torch.matmul(kept.transpose(-1, -2), g_chunk)
            # dP = (g v^T) / (1 - p) where kept, else 0;  dS = P * (dP - row_dot) = (g v_scaled^T) * kept - P * row_dot
            d_probs = torch.matmul(g_chunk, v_scaled[:, :, :end].transpose(-1, -2))
            d_scores = d_probs.mul_(kept).addcmul_(chunk, row_dot[:, :, start:end], value=-1)
            dq[:, :, start:end] = torch.matmul(d_scores, k[:, :, :end])
            dk[:, :, :end] += torch.matmul(d_scores.transpose(-1, -2), q_scaled[:, :, start:end])
        dq.mul_(ctx.scale)
        dv.mul_(ctx.keep_scale)
        return dq, dk.to(k.dtype), dv.to(v_scaled.dtype), None, None, None


@torch.compiler.disable  # run eagerly under torch.compile, like the CPU dropout (see dropout.py)
def causal_attention_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention of (B, H, T, D) q, k, v with dropout on the probabilities; `bias` is an additive (B, 1, T, T) mask.

    The dropout seed is drawn from torch's global generator, so runs are reproducible and resumable like any dropout.
    """
    return _ChunkedAttentionDropout.apply(q, k, v, bias, float(dropout_p), draw_seed())
