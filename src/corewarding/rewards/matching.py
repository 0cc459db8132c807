"""Answer extraction and answer matching for a whole step, batched.

Equivalence checking (math-verify in worker processes) is the expensive part of scoring, so callers collect
every pair a step needs and hand them to ``match_pairs`` at once: one ``batch_equivalent`` call, which
deduplicates and caches (G rollouts usually produce a handful of distinct answers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from corewarding.answers import batch_equivalent, extract_answer
from corewarding.rewards.base import RolloutGroup

log = logging.getLogger(__name__)


def safe_extract(text: str) -> str | None:
    """``extract_answer`` that never raises, with blank answers (``\\boxed{}``) counted as no answer.

    A single malformed response must not abort a training step; it simply has no answer.
    """
    try:
        answer = extract_answer(text)
    except Exception as exc:  # a parser bug on one response costs that response its answer, nothing more
        log.warning(
            "answer extraction failed (%s: %s); treating the response as unanswered", type(exc).__name__, exc
        )
        return None
    if answer is None:
        return None
    answer = str(answer).strip()
    return answer or None


def fill_answers(groups: Sequence[RolloutGroup], overwrite: bool = False) -> None:
    """Extract the answer of every rollout (and teacher rollout) into ``group.answers``/``teacher_answers``.

    Groups whose answers already match their rollouts are left alone unless ``overwrite``, so calling this
    twice costs nothing.
    """
    for g in groups:
        if overwrite or len(g.answers) != len(g.rollouts):
            g.answers = [safe_extract(r.text) for r in g.rollouts]
        if g.teacher_rollouts is not None and (
            overwrite or g.teacher_answers is None or len(g.teacher_answers) != len(g.teacher_rollouts)
        ):
            g.teacher_answers = [safe_extract(r.text) for r in g.teacher_rollouts]


def match_pairs(
    pairs: Sequence[tuple[str | None, str | None]], exact: bool = False, timeout: float = 2.0
) -> list[bool]:
    """Whether each ``(answer, reference)`` pair matches; ``None`` on either side never matches.

    With ``exact`` the strings must be identical (the paper's exact-string rule). Otherwise the whole list
    goes to one ``batch_equivalent`` call, which settles identical strings and plain numbers without a
    worker, sends each distinct remaining pair to math-verify once, and never raises (a timeout counts as
    no match).
    """
    if exact:
        return [pred is not None and ref is not None and pred == ref for pred, ref in pairs]
    if not pairs:
        return []
    verdicts = batch_equivalent(list(pairs), timeout=timeout)
    if len(verdicts) != len(pairs):
        raise RuntimeError(f"batch_equivalent returned {len(verdicts)} verdicts for {len(pairs)} pairs")
    return [bool(v) for v in verdicts]
