"""Where and how computation runs: the device, the autocast precision, the distributed environment.

The leaf every layer may import. One rule for `--device` in every verb: the default is CUDA when PyTorch sees a GPU,
else the CPU; a device that this machine does not have is refused with one sentence instead of failing deep inside
PyTorch."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str | None) -> str:
    """A device string that works here: `name`, or for None / "auto" "cuda" when available, else "cpu"."""
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {name!r} is not a device; use cpu, cuda or cuda:N (default: cuda when available)."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"--device {name}: {why}; use --device cpu.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {name}: there {'is' if count == 1 else 'are'} only {count} CUDA device(s) "
                f"here; use cuda:0..cuda:{count - 1}."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: {device.type} devices are not supported; use cpu or cuda.")
    return name


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 autocast is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None = plain fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use one of {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else None
    return None


def autocast(device: torch.device, precision: str = "auto", model_dtype: torch.dtype = torch.float32):
    """The autocast context for `precision` on `device`; a no-op for fp32 or for a model already in low precision."""
    dtype = resolve_precision(precision, device)
    if dtype is None or model_dtype != torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
