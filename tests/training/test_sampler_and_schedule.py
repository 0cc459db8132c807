"""The two pure functions resume rests on: which questions a step sees, and the learning rate of an update."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from corewarding.training.sampler import StepSampler
from corewarding.training.trainer import _lr_lambda

ITEMS = [f"q{i}" for i in range(10)]


def test_every_item_once_per_epoch_in_a_seeded_order():
    sampler = StepSampler(ITEMS, batch_size=5, seed=3)
    epoch0 = sampler.batch(0) + sampler.batch(1)
    epoch1 = sampler.batch(2) + sampler.batch(3)
    assert sorted(epoch0) == sorted(ITEMS) and sorted(epoch1) == sorted(ITEMS)
    assert epoch0 != ITEMS  # shuffled
    assert epoch0 != epoch1  # reshuffled each epoch
    assert StepSampler(ITEMS, 5, seed=4).batch(0) != sampler.batch(0)  # the seed matters


def test_a_batch_depends_on_the_step_alone():
    """Resume exactness: a fresh sampler (a restarted run) gives step s the same batch, in any call order."""
    straight = StepSampler(ITEMS, batch_size=4, seed=7)
    expected = [straight.batch(s) for s in range(8)]
    restarted = StepSampler(ITEMS, batch_size=4, seed=7)
    assert [restarted.batch(s) for s in (5, 2, 7, 0, 1, 3, 6, 4)] == [
        expected[s] for s in (5, 2, 7, 0, 1, 3, 6, 4)
    ]


def test_batches_straddle_epochs_and_positions_say_where():
    sampler = StepSampler(ITEMS, batch_size=4, seed=1, shuffle=False)
    assert sampler.batch(0) == ["q0", "q1", "q2", "q3"]
    assert sampler.batch(2) == ["q8", "q9", "q0", "q1"]  # the last two of epoch 0, the first two of epoch 1
    assert sampler.position(2) == {"epoch": 0, "offset": 8}
    assert sampler.position(3) == {"epoch": 1, "offset": 2}
    assert len(StepSampler(ITEMS, batch_size=25, seed=0).batch(0)) == 25  # a batch larger than the data


def test_no_items_is_a_clear_error():
    with pytest.raises(ValueError, match="no training items"):
        StepSampler([], batch_size=2, seed=0)


def _lrs(schedule: str, warmup: int, total: int, min_ratio: float = 0.0) -> list[float]:
    fn = _lr_lambda(schedule, warmup, total, min_ratio)
    return [fn(step) for step in range(total)]


def test_warmup_is_linear_up_to_the_full_rate():
    lrs = _lrs("cosine", warmup=4, total=20)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # the cosine starts at the top


def test_cosine_decays_monotonically_to_the_floor():
    lrs = _lrs("cosine", warmup=2, total=12, min_ratio=0.1)
    decay = lrs[2:]
    assert all(a > b for a, b in itertools.pairwise(decay))
    # halfway through the decay the cosine is at the midpoint between 1 and the floor
    assert _lr_lambda("cosine", 2, 12, 0.1)(7) == pytest.approx(0.1 + 0.9 * 0.5)
    assert _lr_lambda("cosine", 2, 12, 0.1)(12) == pytest.approx(0.1)  # the end: the floor
    assert _lr_lambda("cosine", 2, 12, 0.1)(50) == pytest.approx(0.1)  # past the end: stays there
    assert _lr_lambda("cosine", 0, 10, 0.0)(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_constant_schedule_after_warmup_and_no_warmup():
    assert _lrs("constant", warmup=3, total=8) == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1])
    assert _lrs("constant", warmup=0, total=3) == [1.0, 1.0, 1.0]


def test_torch_scheduler_follows_the_lambda_step_by_step():
    """The way the trainer uses it: LambdaLR over AdamW, one scheduler step per optimizer step."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=3e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda("cosine", 1, 10, 0.0))
    seen = []
    for _ in range(10):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([3e-6 * f for f in _lrs("cosine", 1, 10)])
    assert seen[0] == pytest.approx(3e-6) and seen[-1] < 3e-7
