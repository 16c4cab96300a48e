"""The epoch plan every batch source is built on: batch slicing, a plan that is a pure function of (seed, epoch) and
built once per epoch, and the (epoch, position) state, including a task source's older "index" state."""

from __future__ import annotations

import numpy as np
import torch

from gpt1.data.batching import EpochPlan, PlannedBatches, batch_slices
from gpt1.data.corpus import BlockSampler
from gpt1.data.tasks import get_task
from gpt1.data.text import DynamicPaddingSource, PackedSource
from gpt1.data.transforms import TaskBatchSource, TaskData


def test_batch_slices_keep_or_drop_the_short_last_batch():
    assert batch_slices(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batch_slices(list(range(7)), 3, drop_last=True) == [[0, 1, 2], [3, 4, 5]]
    assert batch_slices(list(range(6)), 3, drop_last=True) == [[0, 1, 2], [3, 4, 5]]
    assert batch_slices([], 3, drop_last=True) == []


class _Counting(PlannedBatches):
    """Batches of one index each, in the seeded order; counts how often a plan is built."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.built = n, seed, 0

    def epoch_plan(self, epoch: int) -> list:
        self.built += 1
        return batch_slices(self.epoch_rng(epoch).permutation(self.n).tolist(), 1)

    def collate(self, item) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(item)}


def test_plan_is_built_once_per_epoch_and_state_restores_the_stream():
    a = _Counting(5, seed=3)
    stream = [int(a.next_batch()["x"]) for _ in range(12)]  # into the third epoch
    assert a.built == 3 and sorted(stream[:5]) == list(range(5)) and stream[:5] != stream[5:10]
    b = _Counting(5, seed=3)
    b.load_state_dict({"epoch": 1, "position": 2})
    assert [int(b.next_batch()["x"]) for _ in range(5)] == stream[7:12]
    assert _Counting(5, seed=3).plan(4) == a.plan(4)  # a pure function of (seed, epoch)


def test_every_batch_source_walks_the_shared_epoch_plan():
    examples = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    data = TaskData(get_task("sst2"), [[e] for e in examples], np.array([0, 1, 0, 1]))
    for source in (
        TaskBatchSource(data, 2),
        DynamicPaddingSource(examples, 2),
        PackedSource(examples, 2, 8),
    ):
        assert isinstance(source, PlannedBatches)
    assert isinstance(BlockSampler(np.arange(100), 8, 2, rank=0, world_size=1), EpochPlan)


def test_task_source_resumes_from_an_older_index_state():
    data = TaskData(get_task("sst2"), [[[i + 1, 0]] for i in range(9)], np.arange(9) % 2)
    a = TaskBatchSource(data, 2, seed=4)
    for _ in range(6):
        a.next_batch()
    state = a.state_dict()
    old = {"epoch": state["epoch"], "index": state["position"], "seed": 4, "n": 9}
    b = TaskBatchSource(data, 2, seed=4)
    b.load_state_dict(old)
    for _ in range(4):
        assert torch.equal(a.next_batch()["input_ids"], b.next_batch()["input_ids"])
