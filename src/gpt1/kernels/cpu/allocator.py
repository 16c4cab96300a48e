"""Keep freed CPU memory for reuse during training, instead of giving it back to the kernel at every free.

A training step frees and re-allocates the same large tensors (activations, gradients, the LM head's logits) every
step. glibc's malloc serves each allocation over 32 MB with a fresh `mmap` and unmaps it when freed, so every step
the kernel faults in and zeroes those pages again, a measurable share of a CPU training step (benchmarks/train.py;
the same effect that running under jemalloc or tcmalloc has, which PyTorch's CPU tuning guide recommends). With mmap
off and the trim threshold high, freed blocks stay in the heap and the next step reuses them. Peak memory is
unchanged; memory freed after training is returned only as the heap shrinks from the top (or by `malloc_trim`).
This changes the whole process's allocator, so it is opt-in: `TrainConfig.keep_freed_memory`.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed memory (no mmap, no trimming below 2 GB). Idempotent; returns whether it
    applies (False off Linux or without glibc, where nothing changes)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return False
    _done = ok
    return ok
