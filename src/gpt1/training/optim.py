"""The optimizer and the learning-rate schedule of every run: AdamW over two decay groups, linear warmup, then
cosine, linear or no decay."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

SCHEDULES = ("cosine", "linear", "constant")


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Factor on the peak lr for 0-based update `step`: linear warmup to 1 over `warmup_steps` updates, then the decay.

    Warmup gives update s the factor (s+1)/warmup, so the first update already moves. After warmup,
    p = (s - warmup + 1) / (total - warmup + 1) runs from just above 0 to just below 1, and the factor is
    0.5 (1 + cos(pi p)) ("cosine") or 1 - p ("linear"): both reach 0 one step past the end.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    p = (step - warmup_steps + 1) / max(1, total_steps - warmup_steps + 1)
    p = min(max(p, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return 1.0 - p
    raise ValueError(f"Unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}.")


def warmup_steps(total_steps: int, steps: int | None, fraction: float | None) -> int:
    """Warmup updates of a run: `fraction` of all steps when given, else `steps` (never more than the run)."""
    warm = steps or 0
    if fraction is not None:
        warm = int(round(fraction * total_steps))
    return min(warm, total_steps)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on tensors with >= 2 dims (matrices, embeddings), none on biases and LayerNorm gains.

    This is the paper's "L2 regularization with w = 0.01 on all non bias or gain weights"; OpenAI's code decays
    every tensor of rank > 1, embeddings included, and so do we. The tied LM head is counted once.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(
    model: nn.Module, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on `param_groups`; fused on CUDA and CPU (one kernel over all tensors)."""
    kwargs: dict[str, Any] = dict(lr=lr, betas=betas, eps=eps)
    if device.type in ("cuda", "cpu"):
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups(model, weight_decay), **kwargs)


def schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: int, kind: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler stepping `optimizer`'s lr along `lr_multiplier`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, total_steps, warmup, kind))
