"""The CPU dropout's random source: the right drop rate, unbiased scaling, seeded, and the gradient uses the mask."""

from __future__ import annotations

import torch

from gpt1.kernels import dropout
from gpt1.kernels.cpu.dropout import keep_mask, quantized_p
from gpt1.model.gpt import Dropout


def test_drop_rate_and_quantized_p():
    assert quantized_p(0.1) == 6554 / 65536 and quantized_p(0.5) == 0.5
    for seed, p in enumerate((0.1, 0.5, 0.9)):
        mask = keep_mask((1000, 1003), p, seed)  # odd size: the last 64-bit draw is partly used
        assert mask.shape == (1000, 1003) and mask.dtype == torch.uint8 and set(mask.unique().tolist()) == {0, 1}
        assert abs(1 - mask.float().mean().item() - p) < 3e-3
    assert keep_mask((10_000,), 0.0, 3).all() and not keep_mask((10_000,), 1.0, 3).any()
    assert torch.equal(keep_mask((999,), 0.3, (7, 128)), keep_mask((999,), 0.3, (7, 128)))  # a function of the seed
    assert not torch.equal(keep_mask((999,), 0.3, (7, 128)), keep_mask((999,), 0.3, (7, 0)))


def test_quarters_are_independent():
    """Neighbouring elements come from the four 16-bit quarters of one 64-bit draw; they must not be correlated."""
    mask = keep_mask((4_000_000,), 0.5, 1).float().view(-1, 4) - 0.5
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs((mask[:, i] * mask[:, j]).mean().item()) < 2e-3


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
