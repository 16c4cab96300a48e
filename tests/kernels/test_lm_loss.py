"""The LM loss fused with the LM head: the same loss and gradients as the plain loss of the full logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import gpt1.kernels as kernels
from gpt1.kernels.cpu import lm_loss as fused
from gpt1.model.losses import lm_loss


def test_fused_loss_equals_the_loss_of_the_full_logits(monkeypatch):
    """Chunk by chunk; in float64 exactly, and in bf16 autocast as closely as bf16 allows."""
    monkeypatch.setattr(fused, "CHUNK", 32)  # chunks straddle rows
    torch.manual_seed(0)
    hidden = torch.randn(3, 50, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(70, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 70, (3, 50))
    labels[1, :20] = -100
    full = lm_loss(hidden @ weight.t(), labels)
    chunked = kernels.lm_loss(hidden, weight, labels)
    assert torch.allclose(full, chunked, atol=1e-12)
    for a, b in zip(torch.autograd.grad(full, (hidden, weight)), torch.autograd.grad(3 * chunked, (hidden, weight))):
        assert torch.allclose(3 * a, b, atol=1e-12)  # the incoming gradient scales both
    with torch.no_grad():
        assert torch.allclose(kernels.lm_loss(hidden, weight, labels), full, atol=1e-12)

    h32, w32 = (t.detach().float().requires_grad_() for t in (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = lm_loss(F.linear(h32, w32), labels)
        got = kernels.lm_loss(h32, w32, labels)
    assert got.dtype == torch.float32 and abs(got.item() - ref.item()) < 1e-3 * ref.item()
    for a, b in zip(torch.autograd.grad(ref, (h32, w32)), torch.autograd.grad(got, (h32, w32))):
        assert b.dtype == torch.float32 and (a - b).abs().max() < 0.02 * a.abs().max()
