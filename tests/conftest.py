"""Shared test fixtures: the reference data folder, offline hub, small real models built from configs."""

from __future__ import annotations

import os
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from corewarding.data.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data():
    """The real reference data (MATH, DAPO, OpenRS, benchmarks); tests that need it fail loudly without it."""
    path = shared_data_dir()
    assert path.is_dir(), f"reference data not found at {path}; set COREWARDING_DATA_DIR"
    return path


class Timing:
    """Wall-clock checks that a busy 2-core machine does not fail, and that still catch what they guard.

    * ``within``: a run slower than its bound is measured again (the best of a few counts, so a burst of
      load elsewhere is dropped), and the bound grows with a reference measured in the same test: a plain
      Python pass over every character of the same input, which a loaded machine slows as much as the code
      under test. A quadratic scan of a 100 kB input costs thousands of such passes, so it still fails.
    * ``growth``: how much longer a larger input takes than a smaller one, each timed the best of a few
      rounds taken in turn, so both see the same load. A linear pass over 16x the input takes about 16x
      as long, a quadratic one 256x.
    """

    @staticmethod
    def _once(fn):
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    def reference(self, text: str, repeat: int = 3) -> float:
        """Best-of-``repeat`` seconds of one Python-level pass over ``text``, on this machine, now."""

        def scan() -> int:
            count = 0
            for ch in text:
                if ch == "{":
                    count += 1
            return count

        return min(self._once(scan)[0] for _ in range(repeat))

    def within(self, fn, floor: float, text: str | None = None, scale: float = 100.0, repeat: int = 3):
        """``fn()``'s result, asserting it ran within ``max(floor, scale * reference(text))`` seconds at
        least once in ``repeat`` tries. A run far over the bound (5x) is not retried: it is the failure the
        bound is there for, and running it again would only make the test slower."""
        best, result = self._once(fn)
        if best < floor:
            return result
        bound = max(floor, scale * self.reference(text)) if text is not None else floor
        for _ in range(repeat - 1):
            if best < bound or best > 5 * bound:
                break
            elapsed, result = self._once(fn)
            best = min(best, elapsed)
        assert best < bound, f"took {best:.2f} s, bound {bound:.2f} s (floor {floor} s)"
        return result

    @staticmethod
    def caught(fn):
        """``fn`` made to return the exception it raises (None when none), so that a call that must fail
        can be timed too."""

        def call():
            try:
                fn()
            except Exception as err:
                return err
            return None

        return call

    def growth(self, small, large, repeat: int = 5) -> tuple[float, float]:
        """Best seconds of ``small()`` and of ``large()`` over ``repeat`` rounds, one of each per round."""
        best_small = best_large = float("inf")
        for _ in range(repeat):
            best_small = min(best_small, self._once(small)[0])
            best_large = min(best_large, self._once(large)[0])
        return best_small, best_large


@pytest.fixture(scope="session")
def timing() -> Timing:
    return Timing()
