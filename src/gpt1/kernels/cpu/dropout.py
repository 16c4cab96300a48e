"""Dropout for CPU training with a cheaper random source and cheaper masking than PyTorch's CPU `nn.Dropout`.

On a CPU, `nn.Dropout` draws one float per element through `bernoulli_` from torch's only CPU generator, a
Mersenne Twister, and a `gpt1` training step has 25 dropout layers plus the attention-probability masks (~130 M
elements a step). Here (timings in benchmarks/train.py):

- `keep_mask` takes 64 random bits per *four* elements from NumPy's SFC64 generator (small and fast; it passes
  PractRand and BigCrush) and compares 16-bit quarters with a threshold, far fewer nanoseconds per random bit than
  torch's `random_`. The price is that the drop probability is p rounded to a multiple of 2^-16 (0.1 becomes
  0.1000061); kept values are scaled by 1 / (1 - that probability), so the expectation is exact.
- Masks are uint8 0/1 tensors, applied by converting to the activation's dtype and multiplying: PyTorch's CPU kernels
  for boolean masks (`masked_fill`, bool -> float casts) run several times slower than that on these sizes.

Each mask is a function of a seed drawn from torch's generator (`draw_seed`), so runs stay reproducible, and resume
exactly, through torch's RNG state alone. `gpt1.kernels.dropout` picks this on a CPU, `F.dropout` elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

_LEVELS = 1 << 16
Seed = int | Sequence[int]


def quantized_p(p: float) -> float:
    """The drop probability `keep_mask` really uses: p rounded to a multiple of 2^-16."""
    return round(p * _LEVELS) / _LEVELS


def draw_seed() -> int:
    """A seed for `keep_mask` from torch's global generator (a few microseconds)."""
    return int(torch.randint(0, 2**62, (1,)).item())


def keep_mask(shape, p: float, seed: Seed) -> torch.Tensor:
    """A uint8 CPU tensor of `shape`: 0 (dropped) with probability `quantized_p(p)`, else 1; a function of `seed`."""
    n = math.prod(shape)
    if p >= 1.0:  # the threshold would not fit the 16-bit comparison
        return torch.zeros(shape, dtype=torch.uint8)
    words = np.random.SFC64(np.random.SeedSequence(seed)).random_raw((n + 3) // 4)  # uint64
    quarters = words.view(np.int16)[:n]  # four independent uniform 16-bit draws per word
    kept = np.greater_equal(quarters, round(p * _LEVELS) - _LEVELS // 2)  # NumPy bools are bytes of 0 / 1
    return torch.from_numpy(kept.view(np.uint8)).view(shape)


def apply_mask(x: torch.Tensor, keep: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """x * keep * scale, with the uint8 mask cast to x's dtype first (mixed-dtype products are slow on CPUs)."""
    out = x * keep.to(x.dtype)
    return out.mul_(scale) if scale != 1.0 else out


class _Dropout(torch.autograd.Function):
    """Saves the 1-byte mask, not a scaled float copy of it."""

    @staticmethod
    def forward(ctx, x, p: float, seed: int):
        keep = keep_mask(x.shape, p, seed)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - quantized_p(p))
        return apply_mask(x, keep, ctx.scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return apply_mask(grad, keep, ctx.scale), None, None


# torch.compile runs this eagerly: it cannot trace the NumPy draw, and on a CPU the compiled graph with the
# compiler's own dropout and attention was slower than these eager paths (benchmarks/train.py --compile).
@torch.compiler.disable
def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of a CPU tensor with drop probability 0 < p < 1, through `keep_mask`."""
    return _Dropout.apply(x, p, draw_seed())
