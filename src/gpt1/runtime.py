"""One rule for `--device` in every verb: the default is CUDA when PyTorch sees a GPU, else the CPU; a device that
this machine does not have is refused with one sentence instead of failing deep inside PyTorch."""

from __future__ import annotations


def resolve_device(name: str | None) -> str:
    """A device string that works here: `name`, or for None / "auto" "cuda" when available, else "cpu"."""
    import torch

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
