"""The supervised upper bound: reward 1 when the rollout's answer is equivalent to the gold answer."""

from __future__ import annotations

from corewarding.errors import DataError
from corewarding.rewards.base import RewardMethod, RewardOutput, RolloutGroup, check_answers_filled, register
from corewarding.rewards.matching import match_pairs


@register
class GroundTruthReward(RewardMethod):
    """``gt``: the baseline that *does* see labels; every question must carry ``gold``."""

    name = "gt"
    uses_pseudo_labels = False

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        check_answers_filled(groups, self.name)
        for g in groups:
            if g.question.gold is None or not str(g.question.gold).strip():
                raise DataError(
                    f"method gt: question {g.question.id!r} (source {g.question.source or 'unknown'!r}) has no "
                    "gold answer (field 'gold' is empty); the ground-truth reward needs one for every question"
                )
        pairs = [(a, str(g.question.gold).strip()) for g in groups for a in g.answers]
        flat = match_pairs(pairs)
        rewards, pos = [], 0
        for g in groups:
            rewards.append([1.0 if ok else 0.0 for ok in flat[pos : pos + g.size]])
            pos += g.size
        return RewardOutput(rewards=rewards, pseudo_labels=[None] * len(groups))
