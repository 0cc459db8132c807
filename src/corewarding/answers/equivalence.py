"""Is a predicted answer mathematically the same as a gold answer?

The heavy lifting is math-verify (fractions vs decimals, ``\\dfrac``, degrees, intervals, tuples,
``\\text{}``, thousands separators, ``142.0`` vs ``142``), run in worker processes with a hard deadline
(see ``pool``). In front of it sit cheap checks that settle most pairs of a training step without a
worker round-trip:

* missing answers are never equivalent to anything;
* identical strings (after trimming whitespace, ``$...$`` and a final period) are equivalent;
* answers longer than ``MAX_ANSWER_CHARS`` are not parsed at all (not equivalent unless identical);
* two plain decimal numbers (``1,000`` / ``1000.0`` / ``-3``) are compared exactly as decimals.

Every verdict is cached per (pred, gold), because voting and rewards compare the same strings many times.
Nothing here raises for the sake of its input: a timeout or an error means "not equivalent".
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from corewarding.answers.pool import get_pool

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
# Longer answers are not parsed: no real final answer is this long, and parsing cost grows with length.
MAX_ANSWER_CHARS = 1000
CACHE_SIZE = 200_000
_COMPARE = "corewarding.answers._mathcheck:compare"

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


class _LRU:
    """A small thread-safe LRU map (functools.lru_cache cannot be consulted without computing)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bool | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: bool) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_CACHE = _LRU(CACHE_SIZE)


def clear_cache() -> None:
    """Forget cached verdicts (tests; or after changing what equivalence means)."""
    _CACHE.clear()


def normalize(answer: str) -> str:
    """Trivial normalization that never changes meaning: whitespace, math delimiters, a final period."""
    text = answer.strip()
    for _ in range(3):
        before = text
        for left, right in _MATH_DELIMITERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                inner = text[len(left) : len(text) - len(right)]
                if left not in inner and right not in inner:  # "$a$ or $b$" is not one math span
                    text = inner.strip()
        if text.endswith(".") and not text.endswith("\\."):
            text = text[:-1].rstrip()
        if text == before:
            break
    return text


def _plain_number(text: str) -> Decimal | None:
    if len(text) > 100 or not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def prejudge(pred: str | None, gold: str | None) -> bool | tuple[str, str]:
    """The verdict when the cheap checks settle it, else the normalized pair math-verify must decide."""
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    if len(p) > MAX_ANSWER_CHARS or len(g) > MAX_ANSWER_CHARS:
        return False
    p_num, g_num = _plain_number(p), _plain_number(g)
    if p_num is not None and g_num is not None:
        return p_num == g_num
    return (p, g)


def is_equivalent(pred: str | None, gold: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether ``pred`` states the same mathematical answer as ``gold`` (math-verify semantics).

    Never raises and never spends more than ``timeout`` seconds on the comparison itself (the very first
    call in a process also waits for the worker processes to start, about a second, once).
    """
    return batch_equivalent([(pred, gold)], timeout=timeout)[0]


def batch_equivalent(
    pairs: Sequence[tuple[str | None, str | None]],
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int], None] | None = None,
) -> list[bool]:
    """``is_equivalent`` for many ``(pred, gold)`` pairs at once, in the worker pool.

    Distinct undecided pairs go to the workers once each; every comparison gets ``timeout`` seconds, after
    which its worker is killed and replaced and the pair counts as not equivalent. ``progress(k)`` is
    called as ``k`` more pairs are decided. Never raises.
    """
    try:
        return _batch_equivalent(pairs, max(float(timeout), 0.01), progress)
    except Exception:  # a bug here must not take a training step down; say so loudly, decide "no"
        log.exception("batch_equivalent failed; %d pairs count as not equivalent", len(pairs))
        return [False] * len(pairs)


def _batch_equivalent(
    pairs: Sequence[tuple[str | None, str | None]],
    timeout: float,
    progress: Callable[[int], None] | None,
) -> list[bool]:
    results: list[bool] = [False] * len(pairs)
    waiting: dict[tuple[str, str], list[int]] = {}
    decided = 0
    for i, pair in enumerate(pairs):
        try:
            pred, gold = pair
        except (TypeError, ValueError):
            pred = gold = None
        verdict = prejudge(pred, gold)
        if isinstance(verdict, tuple):
            cached = _CACHE.get(verdict)
            if cached is None:
                waiting.setdefault(verdict, []).append(i)
                continue
            verdict = cached
        results[i] = verdict
        decided += 1
    if progress is not None and decided:
        progress(decided)
    if not waiting:
        return results
    keys = list(waiting)

    def on_result(index: int, value: object) -> None:
        verdict = value is True
        _CACHE.put(keys[index], verdict)
        for i in waiting[keys[index]]:
            results[i] = verdict
        if progress is not None:
            progress(len(waiting[keys[index]]))

    get_pool().map(_COMPARE, keys, timeout=timeout, default=False, on_result=on_result)
    return results
