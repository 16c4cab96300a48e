"""The LM loss fused with the LM head (`linear_cross_entropy`): next-token cross-entropy without the full logits.

Training does not need the (B, T, vocab) logits, only the loss and its gradient. At 4 x 512 tokens and GPT-1's
40478-token vocabulary the logits, their float32 copy, the saved log-softmax and the gradient take about 1 GB.
`linear_cross_entropy` computes `cross_entropy(hidden @ weight.T)` a chunk of positions at a time and, in the same
pass, the gradients with respect to `hidden` and `weight` (softmax - one-hot is the logits' gradient); the backward
pass only scales them. That keeps one chunk's logits in memory at a time without recomputing the LM head matmul
(activation checkpointing would redo a tenth of a `gpt1` training step's FLOPs). The plain path it equals is
`gpt1.model.losses.lm_loss` of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
CHUNK = 512  # positions per chunk: an 83 MB float32 buffer at GPT-1's vocabulary


def shifted_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `hidden @ weight.T` (labels shifted left by one, -100 ignored), without the
    full logits: `gpt1.model.losses.lm_loss(hidden @ weight.T, labels)`."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1).to(h.device)
    return linear_cross_entropy(h, weight, y) / (y != IGNORE).sum()


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` (N, C) x (V, C) against `labels` (N,), chunk by chunk.

    The matmuls run in the autocast dtype when autocast is on (as `F.linear` would), softmax and the loss in float32.
    """
    compute = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else None
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, labels, compute)
    total = hidden.new_zeros((), dtype=_acc(hidden))
    for s in range(0, hidden.shape[0], CHUNK):
        logits = _logits(hidden[s : s + CHUNK], weight, compute)
        total = total + F.cross_entropy(logits, labels[s : s + CHUNK], ignore_index=IGNORE, reduction="sum")
    return total


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype softmax and sums run in: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _logits(h: torch.Tensor, weight: torch.Tensor, compute) -> torch.Tensor:
    dtype = compute or h.dtype
    return F.linear(h.to(dtype), weight.to(dtype)).to(_acc(h))


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and both gradients; backward scales them by the incoming gradient.

    Written to allocate few large tensors: on a CPU each fresh tensor over glibc's 32 MB mmap threshold is new
    pages that the kernel must fault in and zero, which cost more than the matmuls here. So the softmax works in place
    in one reused chunk buffer, and the logits' gradient G (N x V, the compute dtype) is one tensor, whose two
    products (G @ W for `hidden`, G^T @ H for `weight`) then run as single large matmuls.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, compute):
        dtype, acc = compute or hidden.dtype, _acc(hidden)
        h, w = hidden.to(dtype), weight.to(dtype)  # cast once, not per chunk
        n = h.shape[0]
        grad_logits = torch.empty(n, w.shape[0], dtype=dtype, device=h.device)
        work = None if dtype == acc else torch.empty(min(CHUNK, n), w.shape[0], dtype=acc, device=h.device)
        total = torch.zeros((), dtype=acc, device=h.device)
        x = g = None
        for s in range(0, n, CHUNK):
            g, y = grad_logits[s : s + CHUNK], labels[s : s + CHUNK]
            torch.mm(h[s : s + CHUNK], w.t(), out=g)  # the chunk's logits
            x = g if work is None else work[: len(y)].copy_(g)
            kept = y != IGNORE
            safe_y = y.masked_fill(~kept, 0)[:, None]
            top = x.amax(dim=-1, keepdim=True)
            target = x.gather(1, safe_y) - top
            x.sub_(top).exp_()
            z = x.sum(dim=-1, keepdim=True)
            total -= (target - z.log()).squeeze(1).masked_fill(~kept, 0).sum()  # -log softmax at the label
            # d(-log p[y]) / d logits = softmax - one_hot(y); zero for ignored positions
            x.div_(z).scatter_add_(1, safe_y, torch.full_like(target, -1.0))
            x.masked_fill_(~kept[:, None], 0.0)
            if x is not g:
                g.copy_(x)
        # Release each large buffer as soon as it is done with: this runs at the end of the forward pass, when every
        # layer's activations are held, so these few hundred MB decide the training step's peak memory.
        del work, x, g
        grad_hidden = (grad_logits @ w).to(hidden.dtype)
        del w
        grad_weight = grad_logits.t() @ h
        del grad_logits
        grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_total.to(grad_hidden.dtype),
            grad_weight * grad_total.to(grad_weight.dtype),
            None,
            None,
        )
