"""Which training items a step uses, derived from the step number alone.

Deriving the batch from (seed, step) rather than from iterator state is what makes resume exact: a run
restarted at step s sees the same questions an uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from typing import Generic, TypeVar

T = TypeVar("T")


class StepSampler(Generic[T]):
    """Epoch-wise shuffled items; step ``s`` takes global positions ``[s*B, (s+1)*B)``."""

    def __init__(self, items: list[T], batch_size: int, seed: int, shuffle: bool = True):
        if not items:
            raise ValueError("no training items left (empty data set, or every prompt filtered as too long)")
        self.items = items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.items)))
            if self.shuffle:
                random.Random(self.seed * 100_003 + epoch).shuffle(order)
            self._orders = {epoch: order}  # only the current epoch is ever needed
        return self._orders[epoch]

    def batch(self, step: int) -> list[T]:
        out = []
        n = len(self.items)
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(pos, n)
            out.append(self.items[self._order(epoch)[offset]])
        return out

    def position(self, step: int) -> dict[str, int]:
        """Where in the data a step starts (for checkpoints and logs)."""
        epoch, offset = divmod(step * self.batch_size, len(self.items))
        return {"epoch": epoch, "offset": offset}
