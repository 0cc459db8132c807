"""Self-consistency baseline (TTRL-style): the group's own majority answer is its pseudo-label."""

from __future__ import annotations

from typing import Any, ClassVar

from corewarding.rewards.base import RewardMethod, RewardOutput, RolloutGroup, check_answers_filled, register
from corewarding.rewards.voting import (
    VOTING_CHOICES,
    VOTING_OPTIONS,
    elect_labels,
    reward_agreement,
    vote_share,
)


@register
class MajorityVoteReward(RewardMethod):
    """``majority_vote``: reward 1 for rollouts agreeing with the majority of their own group.

    Run on the rephrased view (a data setting of the trainer) this is the paper's "majority voting on
    rephrased questions only" ablation. ``exact_vote=True`` votes and matches by exact answer string, as the
    paper's implementation does; the default groups answers into equivalence classes (``\\frac12`` = ``0.5``).
    ``extraction`` says how answers are read (``boxed``: the paper's last-box-only rule); a rollout without
    an answer neither votes nor earns reward, and a group where nobody answered has no label.
    """

    name = "majority_vote"
    uses_pseudo_labels = True
    option_defaults: ClassVar[dict[str, Any]] = VOTING_OPTIONS
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = VOTING_CHOICES
    exact_vote: bool
    extraction: str

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        check_answers_filled(groups, self.name, extraction=self.extraction)
        labels, counts = elect_labels([g.answers for g in groups], exact=self.exact_vote)
        rewards, agreement, _ = reward_agreement([g.answers for g in groups], labels, exact=self.exact_vote)
        metrics = {"pseudo_label/vote_share": vote_share(counts, [g.size for g in groups])}
        return RewardOutput(rewards=rewards, pseudo_labels=labels, metrics=metrics, agreement=agreement)
