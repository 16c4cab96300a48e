"""The CPU dropout's random source: the right drop rate, unbiased scaling, seeded, and the gradient uses the mask."""

from __future__ import annotations

import torch

from gpt1.dropout import Dropout, drop_mask, dropout, quantized_p


def test_drop_rate_and_quantized_p():
    assert quantized_p(0.1) == 6554 / 65536 and quantized_p(0.5) == 0.5
    g = torch.Generator().manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        mask = drop_mask((1000, 1001), p, generator=g)  # odd size: the last 32-bit draw is half used
        assert mask.shape == (1000, 1001) and mask.dtype == torch.bool
        assert abs(mask.float().mean().item() - p) < 3e-3
    assert not drop_mask((10_000,), 0.0, generator=g).any() and drop_mask((10_000,), 1.0, generator=g).all()


def test_halves_are_independent():
    """Neighbouring elements come from the two halves of one 32-bit draw; they must not be correlated."""
    mask = drop_mask((2_000_000,), 0.5, generator=torch.Generator().manual_seed(1)).float()
    a, b = mask[0::2], mask[1::2]
    assert abs(((a - 0.5) * (b - 0.5)).mean().item()) < 2e-3


def test_expectation_seeding_and_gradient():
    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.1)
    assert abs(y.mean().item() - 1.0) < 0.01  # kept values scaled by 1 / (1 - p)
    torch.manual_seed(3)
    assert torch.equal(y, dropout(x, 0.1))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, y.detach())  # d(sum y)/dx is the scaled keep mask: what y is for x = 1
    module = Dropout(0.1).eval()
    assert torch.equal(module(x), x)  # eval: identity
