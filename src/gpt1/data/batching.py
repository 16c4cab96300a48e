"""The epoch plan every batch source is built on: an epoch's plan (which examples or blocks, in which order) is a
pure function of (seed, epoch), built on first use and kept for that epoch, so a source's state is just a position
and restoring it restores the batch stream exactly.

`EpochPlan` is that core (the block sampler of pre-training uses it directly: its position counts samples);
`PlannedBatches` adds the common case, where an epoch is a list of batches walked by (epoch, position).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class EpochPlan:
    """The per-epoch plan of a batch source, from `seed` alone; subclasses say what a plan is (`epoch_plan`)."""

    seed: int
    _plan_epoch: int | None = None
    _plan: Any = None

    def epoch_rng(self, epoch: int) -> np.random.Generator:
        """The random stream of `epoch`: the same (seed, epoch) always gives the same draws."""
        return np.random.default_rng([self.seed, epoch])

    def epoch_plan(self, epoch: int) -> Any:
        """Build the plan of `epoch` (a pure function of seed and epoch)."""
        raise NotImplementedError

    def plan(self, epoch: int) -> Any:
        """The plan of `epoch`, built once and kept until another epoch is asked for."""
        if epoch != self._plan_epoch:
            self._plan = self.epoch_plan(epoch)
            self._plan_epoch = epoch
        return self._plan

    def forget_plan(self) -> None:
        """Drop the kept plan (after the seed or the position changed under it)."""
        self._plan_epoch, self._plan = None, None


def batch_slices(order: Sequence[int] | np.ndarray, batch_size: int, drop_last: bool = False) -> list:
    """`order` cut into consecutive batches of `batch_size`; the short last one dropped when `drop_last`."""
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class PlannedBatches(EpochPlan):
    """A restartable, endless `BatchSource` whose epoch plan is a list of batch items, each turned into tensors by
    `collate`; state `{"epoch", "position"}` (the position of the next batch within its epoch)."""

    epoch: int = 0
    position: int = 0

    def collate(self, item: Any) -> dict[str, torch.Tensor]:
        """The tensors of one planned batch."""
        raise NotImplementedError

    def next_batch(self) -> dict[str, torch.Tensor]:
        batches = self.plan(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.plan(self.epoch)
        item = batches[self.position]
        self.position += 1
        return self.collate(item)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.forget_plan()
