"""Drop questions whose prompt exceeds ``max_prompt_length`` tokens, before training starts.

A prompt longer than the budget would be truncated (changing the question) or crowd out the response, so
such questions are removed up front, measured exactly as the rollout engine will render them
(``corewarding.data.prompting``). For Co-rewarding-I a pair is one training unit: if either view is too
long both are dropped, otherwise one view would have no partner to be rewarded by.

Both filters return ``(kept, n_dropped)`` and log the count at INFO, so callers can put it in metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from corewarding.data.prompting import prompt_lengths
from corewarding.data.question import Question
from corewarding.errors import ConfigError

logger = logging.getLogger(__name__)


def _check_max_len(max_len: int) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"max_prompt_length: expected a positive integer, got {max_len!r}")


def filter_by_prompt_length(
    questions: list[Question], tokenizer: Any, max_len: int
) -> tuple[list[Question], int]:
    """Keep the questions whose rendered prompt has at most ``max_len`` tokens; return (kept, n_dropped)."""
    _check_max_len(max_len)
    lengths = prompt_lengths(tokenizer, [q.messages for q in questions])
    kept = [q for q, n in zip(questions, lengths, strict=True) if n <= max_len]
    dropped = len(questions) - len(kept)
    logger.info(
        "prompt length filter (max %d tokens): dropped %d of %d questions", max_len, dropped, len(questions)
    )
    return kept, dropped


def filter_pairs_by_prompt_length(
    pairs: list[tuple[Question, Question]], tokenizer: Any, max_len: int
) -> tuple[list[tuple[Question, Question]], int]:
    """Keep the pairs whose *both* prompts fit in ``max_len`` tokens; return (kept, n_dropped pairs)."""
    _check_max_len(max_len)
    lengths = prompt_lengths(tokenizer, [q.messages for pair in pairs for q in pair])
    kept = [
        pair for k, pair in enumerate(pairs) if lengths[2 * k] <= max_len and lengths[2 * k + 1] <= max_len
    ]
    dropped = len(pairs) - len(kept)
    logger.info("prompt length filter (max %d tokens): dropped %d of %d pairs", max_len, dropped, len(pairs))
    return kept, dropped
