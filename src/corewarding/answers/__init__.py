"""Answers: extraction from solutions, equivalence checking, voting, and the worker pool behind them.

Used by rewards (pseudo-labels and matches), evaluation (accuracy, maj@k) and ``corewarding grade``.
Importing this package is cheap: sympy and math-verify load only in the worker processes.
"""

from corewarding.answers.equivalence import (
    DEFAULT_TIMEOUT_S,
    MAX_ANSWER_CHARS,
    batch_equivalent,
    clear_cache,
    is_equivalent,
    normalize,
)
from corewarding.answers.extraction import EXTRACTIONS, extract_answer, reference_answer
from corewarding.answers.pool import PoolStats, TimeoutPool, get_pool, shutdown_pool
from corewarding.answers.voting import batch_vote, vote

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EXTRACTIONS",
    "MAX_ANSWER_CHARS",
    "PoolStats",
    "TimeoutPool",
    "batch_equivalent",
    "batch_vote",
    "clear_cache",
    "extract_answer",
    "get_pool",
    "is_equivalent",
    "normalize",
    "reference_answer",
    "shutdown_pool",
    "vote",
]
