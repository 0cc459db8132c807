"""Command-line number types that say what they accept, so a bad value is one argparse line (exit 2).

Every numeric option of every ``corewarding`` command uses one of these as its ``type=``. Each carries its
domain and a few values outside it (``bad_values``), which ``tests/test_cli_bad_values.py`` sweeps over every
option of every command: each must exit 2 with one message and no traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Number:
    """An argparse ``type=`` for an int or float within bounds; NaN and infinities are always refused."""

    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused
    high_open: bool = False
    describe: str = ""

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {self.expected}") from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {self.expected}")
        return value

    def accepts(self, value: object) -> bool:
        """Whether an already-typed ``value`` lies in this domain (what ``corewarding.config`` checks fields
        with): of the right kind (an int field refuses 1.5 and ``True``; a float field takes an int), finite,
        and within the bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    @property
    def expected(self) -> str:
        return self.describe or ("an integer" if self.kind is int else "a number")

    @property
    def bad_values(self) -> list[str]:
        """Values this type must refuse: not a number, NaN/inf for floats, and one on each closed side."""
        bad = ["abc", ""]
        if self.kind is int:
            bad.append("1.5")
        else:
            bad += ["nan", "inf"]
        if self.low is not None:
            bad.append(str(self.kind(self.low)) if self.low_open else str(self.kind(self.low) - 1))
        if self.high is not None:
            bad.append(str(self.kind(self.high)) if self.high_open else str(self.kind(self.high) + 1))
        return bad


POSITIVE_INT = Number(int, low=1, describe="a positive integer")
NONNEGATIVE_INT = Number(int, low=0, describe="an integer ≥ 0")
SEED = Number(int, low=0, high=2**32 - 1, describe="a seed in [0, 2**32)")
POSITIVE_FLOAT = Number(float, low=0, low_open=True, describe="a positive number")
NONNEGATIVE_FLOAT = Number(float, low=0, describe="a number ≥ 0")
FRACTION = Number(float, low=0, high=1, describe="a fraction in [0, 1]")
FRACTION_BELOW_ONE = Number(float, low=0, high=1, high_open=True, describe="a fraction in [0, 1)")
OPEN_FRACTION = Number(float, low=0, high=1, low_open=True, describe="a fraction in (0, 1]")
TEMPERATURE = Number(float, low=0, describe="a temperature ≥ 0 (0 = greedy)")


def numeric_types() -> dict[str, Callable[[str], int | float]]:
    """The named types above, for tests and for documentation."""
    return {name: value for name, value in globals().items() if isinstance(value, Number)}
