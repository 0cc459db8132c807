"""Answer extraction and answer matching for a whole step, batched.

Equivalence checking (math-verify in worker processes) is the expensive part of scoring, so callers collect
every pair a step needs and hand them to ``match_pairs`` at once: one ``batch_equivalent`` call, which
deduplicates and caches (G rollouts usually produce a handful of distinct answers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from corewarding.answers import EXTRACTIONS, batch_equivalent, extract_answer
from corewarding.answers.hendrycks import is_equiv as string_equiv
from corewarding.rewards.base import RolloutGroup

log = logging.getLogger(__name__)

# How a ground-truth reward compares an answer with the gold: ``math_verify`` = mathematical equivalence
# (``corewarding.answers.batch_equivalent``), ``string`` = the paper's normalised exact string match
# (``corewarding.answers.hendrycks``).
GT_GRADERS = ("math_verify", "string")


def safe_extract(text: str, extraction: str = "lenient") -> str | None:
    """``extract_answer`` that never raises, with blank answers (``\\boxed{}``) counted as no answer.

    A single malformed response must not abort a training step; it simply has no answer. ``lenient``
    answers are stripped; ``boxed`` answers are kept verbatim, as the paper's code compares them.
    """
    if extraction not in EXTRACTIONS:  # a configuration error, not a malformed response
        raise ValueError(f"extraction={extraction!r}: expected one of {', '.join(EXTRACTIONS)}")
    try:
        answer = extract_answer(text, extraction)
    except Exception as exc:  # a parser bug on one response costs that response its answer, nothing more
        log.warning(
            "answer extraction failed (%s: %s); treating the response as unanswered", type(exc).__name__, exc
        )
        return None
    if answer is None:
        return None
    answer = str(answer)
    if not answer or answer.isspace():
        return None
    return answer.strip() if extraction == "lenient" else answer


def fill_answers(
    groups: Sequence[RolloutGroup], overwrite: bool = False, extraction: str = "lenient"
) -> None:
    """Extract the answer of every rollout (and teacher rollout) into ``group.answers``/``teacher_answers``.

    Groups whose answers already match their rollouts, and were read with the same ``extraction`` (or set
    by hand), are left alone unless ``overwrite``, so calling this twice costs nothing.
    """
    for g in groups:
        stale = g.answers_extraction is not None and g.answers_extraction != extraction
        if overwrite or stale or len(g.answers) != len(g.rollouts):
            g.answers = [safe_extract(r.text, extraction) for r in g.rollouts]
            g.answers_extraction = extraction
        if g.teacher_rollouts is not None and (
            overwrite
            or stale
            or g.teacher_answers is None
            or len(g.teacher_answers) != len(g.teacher_rollouts)
        ):
            g.teacher_answers = [safe_extract(r.text, extraction) for r in g.teacher_rollouts]


def match_pairs(
    pairs: Sequence[tuple[str | None, str | None]], exact: bool = False, timeout: float = 2.0
) -> list[bool]:
    """Whether each ``(answer, reference)`` pair matches; ``None`` on either side never matches.

    With ``exact`` the strings must be identical (the paper's exact-string rule) and the reference must not
    be blank: an empty label matches nothing, not even an empty answer. Otherwise the whole list goes to
    one ``batch_equivalent`` call, which settles identical strings and plain numbers without a worker,
    sends each distinct remaining pair to math-verify once, and never raises (a timeout counts as no
    match).
    """
    if exact:
        return [_present(pred) and _present(ref) and pred == ref for pred, ref in pairs]
    if not pairs:
        return []
    verdicts = batch_equivalent(list(pairs), timeout=timeout)
    if len(verdicts) != len(pairs):
        raise RuntimeError(f"batch_equivalent returned {len(verdicts)} verdicts for {len(pairs)} pairs")
    return [bool(v) for v in verdicts]


def grade_pairs(
    pairs: Sequence[tuple[str | None, str | None]], grader: str = "math_verify", timeout: float = 2.0
) -> list[bool]:
    """Whether each ``(answer, gold)`` pair is correct under ``grader`` (one of ``GT_GRADERS``).

    ``None`` or a blank string on either side is never correct. ``string`` is the paper's Hendrycks-style
    match (pure Python, no workers); ``math_verify`` is ``match_pairs``' batched equivalence.
    """
    if grader == "math_verify":
        return match_pairs(pairs, timeout=timeout)
    if grader == "string":
        return [_present(pred) and _present(gold) and string_equiv(pred, gold) for pred, gold in pairs]
    raise ValueError(f"grader={grader!r}: expected one of {', '.join(GT_GRADERS)}")


def _present(answer: str | None) -> bool:
    return isinstance(answer, str) and bool(answer) and not answer.isspace()
