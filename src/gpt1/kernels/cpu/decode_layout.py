"""The decode weight layout: weight matrices stored (in, out) in memory, for one-token decoding steps on a CPU.

For a one-row input, MKL's float32 matrix-vector product streams a matrix stored (in, out) — HF's Conv1D order —
faster than one stored in PyTorch's usual (out, in) order (benchmarks/generate.py). Only the memory order changes
(`p.data = p.data.t().contiguous().t()`): shapes, values and weight ties stay as they are. bf16 and GPUs keep the
usual order, and so does training, which runs fastest with it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def wanted(weight: torch.Tensor) -> bool:
    """Whether decoding with matrices like `weight` (its device and dtype) runs faster in the (in, out) order."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32


def is_transposed(weight: torch.Tensor) -> bool:
    """Whether the 2-D `weight` is stored (in, out): a transposed view of a contiguous matrix."""
    return not weight.is_contiguous() and weight.t().is_contiguous()


def arrange(matrices: Iterable[torch.Tensor], transposed: bool) -> None:
    """Store each 2-D parameter of `matrices` in the (in, out) order if `transposed`, else in the usual order."""
    with torch.inference_mode(False), torch.no_grad():  # normal tensors even when called while decoding
        for p in matrices:
            if is_transposed(p) != transposed:
                p.data = p.data.t().contiguous().t() if transposed else p.data.contiguous()
