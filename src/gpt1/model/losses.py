"""The losses on the model's outputs, as plain PyTorch: the LM loss (HF's `loss`) and the fine-tuning task loss.

Training computes the LM loss fused with the LM head instead (`gpt1.kernels.lm_loss`), which equals `lm_loss` here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of positions that do not count (padding), as in HF and PyTorch


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (labels shifted left by one, -100 ignored), computed in float32 (or wider) —
    HF's `loss`."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_logits = shift_logits.to(torch.promote_types(shift_logits.dtype, torch.float32))
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)


def task_loss(logits: torch.Tensor, targets: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """Mean over examples: cross-entropy over classes or choices, or squared error for a regression (STS-B)."""
    if regression:
        return F.mse_loss(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets)
