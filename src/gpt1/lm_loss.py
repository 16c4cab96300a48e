"""The LM loss: next-token cross-entropy, from logits (`lm_loss`) or fused with the LM head (`linear_cross_entropy`).

Training does not need the (B, T, vocab) logits, only the loss and its gradient. At 4 x 512 tokens and GPT-1's
40478-token vocabulary the logits, their float32 copy, the saved log-softmax and the gradient take about 1 GB.
`linear_cross_entropy` computes `cross_entropy(hidden @ weight.T)` a chunk of positions at a time and, in the same
pass, the gradients with respect to `hidden` and `weight` (softmax - one-hot is the logits' gradient); the backward
pass only scales them. That keeps one chunk's logits in memory at a time without recomputing the LM head matmul
(activation checkpointing would redo a tenth of a `gpt1` training step's FLOPs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
CHUNK = 1024  # positions per chunk: ~166 MB of float32 logits at GPT-1's vocabulary


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (labels shifted left by one, -100 ignored), computed in float32 (or wider) — HF's `loss`."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_logits = shift_logits.to(_acc(shift_logits))
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE)


def shifted_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`lm_loss(hidden @ weight.T, labels)` without the full logits: the mean over positions whose label is kept."""
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
    @staticmethod
    def forward(ctx, hidden, weight, labels, compute):
        dtype = compute or hidden.dtype
        w = weight.to(dtype)  # cast once, not per chunk
        grad_hidden = torch.empty_like(hidden)
        acc = _acc(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for s in range(0, hidden.shape[0], CHUNK):
            h, y = hidden[s : s + CHUNK].to(dtype), labels[s : s + CHUNK]
            logits = F.linear(h, w).to(acc)
            log_probs = torch.log_softmax(logits, dim=-1)
            kept = y != IGNORE
            safe_y = y.masked_fill(~kept, 0)
            total -= log_probs.gather(1, safe_y[:, None]).squeeze(1).masked_fill(~kept, 0).sum()
            # d(sum of -log p[y]) / d logits = softmax - one_hot(y), zero on ignored rows
            grad_logits = log_probs.exp_()
            grad_logits[torch.arange(len(y), device=y.device), safe_y] -= 1.0
            grad_logits.masked_fill_(~kept[:, None], 0.0)
            grad_logits = grad_logits.to(dtype)
            grad_hidden[s : s + CHUNK] = (grad_logits @ w).to(hidden.dtype)
            grad_weight += (grad_logits.t() @ h).to(acc)  # summed over chunks in float32 (or wider)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), grad_weight * grad_total.to(grad_weight.dtype), None, None
