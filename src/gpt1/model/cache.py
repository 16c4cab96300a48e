"""The KV cache: every layer's keys and values so far, so decoding one token costs one token's work."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import gpt1.kernels as kernels
from gpt1.config import GPT1Config


class KVCache:
    """Pre-allocated keys and values of every layer, (B, n_head, capacity, head_dim) each.

    `length` counts the positions already stored (shared by all rows of the batch); `key_mask` (B, capacity) marks
    which of them are real tokens (False for left padding), so later steps keep ignoring padded keys. `dtype` is the
    model's dtype; the cache is stored in `self.dtype = kernels.cache_dtype(dtype, device)` (float32 for a bfloat16
    model on a CPU), and attention over it runs in that dtype.
    """

    def __init__(self, config: GPT1Config, batch_size: int, capacity: int, device, dtype) -> None:
        if capacity > config.n_positions:
            raise ValueError(
                f"KV cache capacity {capacity} exceeds the model's context of {config.n_positions} positions."
            )
        self.dtype = kernels.cache_dtype(dtype, device)
        shape = (batch_size, config.n_head, capacity, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=self.dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=self.dtype) for _ in range(config.n_layer)]
        self.key_mask: torch.Tensor | None = None
        self.length = 0
        self.capacity = capacity

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v for `layer` after the cached ones; return all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def update_key_mask(self, key_mask: torch.Tensor | None, end: int) -> torch.Tensor | None:
        """The real-key mask (B, end) of a step whose keys end at `end`: `key_mask` itself, remembered for later steps,
        or (None given) the padding remembered from earlier ones; None when no padding was ever given."""
        if key_mask is not None:
            if self.key_mask is None:
                self.key_mask = torch.ones(self.batch_size, self.capacity, dtype=torch.bool, device=key_mask.device)
            self.key_mask[:, :end] = key_mask
            return key_mask
        return None if self.key_mask is None else self.key_mask[:, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (in that order): beam search re-ranks hypotheses between steps, sampling copies prompts."""
        if index.shape[0] == self.batch_size:  # same batch size: copy only the filled positions, in place
            n = self.length
            for cache in (self.keys, self.values):
                for t in cache:
                    t[:, :, :n] = t[:, :, :n].index_select(0, index)
        else:
            self.keys = [k.index_select(0, index) for k in self.keys]
            self.values = [v.index_select(0, index) for v in self.values]
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)

    @classmethod
    def splice(
        cls, config: GPT1Config, rows: Sequence[tuple[KVCache, int, int]], capacity: int, device, dtype
    ) -> KVCache:
        """A new cache whose row i holds the last `n` stored positions of row `j` of `source`, for
        `rows[i] = (source, j, n)`: right-aligned to a common length (the largest n), the positions before a row's
        own masked out as padding. Continuous batching joins new prompts to running rows this way."""
        length = max(n for _, _, n in rows)
        cache = cls(config, len(rows), capacity, device, dtype)
        cache.key_mask = torch.zeros(len(rows), capacity, dtype=torch.bool, device=device)
        for i, (src, j, n) in enumerate(rows):
            for layer in range(config.n_layer):
                cache.keys[layer][i, :, length - n : length] = src.keys[layer][j, :, src.length - n : src.length]
                cache.values[layer][i, :, length - n : length] = src.values[layer][j, :, src.length - n : src.length]
            cache.key_mask[i, length - n : length] = True
        cache.length = length
        return cache
