"""The supervised upper bound: reward 1 when the rollout's answer is correct against the gold answer.

Two graders (``reward.gt_grader``): ``math_verify`` (the default) rewards a mathematically equivalent
answer; ``string`` is the paper's rule, a Hendrycks-style normalised exact string match
(``corewarding.answers.hendrycks``), applied to the answer read under ``reward.extraction`` (the paper's
code reads the last ``\\boxed{}`` only: ``extraction=boxed``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from corewarding.answers import EXTRACTIONS
from corewarding.errors import DataError
from corewarding.rewards.base import RewardMethod, RewardOutput, RolloutGroup, check_answers_filled, register
from corewarding.rewards.matching import GT_GRADERS, grade_pairs


@register
class GroundTruthReward(RewardMethod):
    """``gt``: the baseline that *does* see labels; every question must carry ``gold``."""

    name = "gt"
    uses_pseudo_labels = False
    option_defaults: ClassVar[dict[str, Any]] = {"extraction": "lenient", "gt_grader": "math_verify"}
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "extraction": EXTRACTIONS,
        "gt_grader": GT_GRADERS,
    }
    extraction: str
    gt_grader: str

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        check_answers_filled(groups, self.name, extraction=self.extraction)
        for g in groups:
            if g.question.gold is None or not str(g.question.gold).strip():
                raise DataError(
                    f"method gt: question {g.question.id!r} (source {g.question.source or 'unknown'!r}) has no "
                    "gold answer (field 'gold' is empty); the ground-truth reward needs one for every question"
                )
        # the string grader sees the gold as stored, as the paper's compute_score does (it normalises both
        # sides itself); equivalence checking gets it trimmed
        golds = [
            str(g.question.gold) if self.gt_grader == "string" else str(g.question.gold).strip()
            for g in groups
        ]
        pairs = [(a, gold) for g, gold in zip(groups, golds, strict=True) for a in g.answers]
        flat = grade_pairs(pairs, self.gt_grader)
        rewards, pos = [], 0
        for g in groups:
            rewards.append([1.0 if ok else 0.0 for ok in flat[pos : pos + g.size]])
            pos += g.size
        return RewardOutput(rewards=rewards, pseudo_labels=[None] * len(groups))
