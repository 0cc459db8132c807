"""Co-rewarding: pseudo-labels that come from a *different* view of the question, so a policy cannot
reward itself for being consistently wrong in one view.

* Co-rewarding-I (data side): question x and its rephrasing x' are rolled out together; x's rollouts are
  rewarded against the majority answer of x''s rollouts and vice versa.
* Co-rewarding-II (model side): a slowly-moving EMA teacher samples its own rollouts; their majority answer
  rewards the policy's rollouts.
"""

from __future__ import annotations

from typing import Any, ClassVar

from corewarding.errors import DataError
from corewarding.rewards.base import (
    VIEWS,
    RewardMethod,
    RewardOutput,
    RolloutGroup,
    check_answers_filled,
    register,
)
from corewarding.rewards.voting import (
    VOTING_CHOICES,
    VOTING_OPTIONS,
    elect_labels,
    reward_agreement,
    vote_share,
)


def twin_indices(groups: list[RolloutGroup], method: str) -> list[int]:
    """For each group, the index of the group holding the other view of the same ``pair_id``.

    Every pair_id must appear exactly once as ``original`` and once as ``rephrased``; anything else means the
    step was assembled wrongly, and silently scoring a lone view would train on an empty label.
    """
    by_pair: dict[str, dict[str, int]] = {}
    for i, g in enumerate(groups):
        if g.view not in VIEWS:
            raise DataError(
                f"{method}: group for question {g.question.id!r} has view {g.view!r}; expected one of {VIEWS}"
            )
        views = by_pair.setdefault(g.pair_id, {})
        if g.view in views:
            raise DataError(
                f"{method}: pair_id {g.pair_id!r} has two {g.view} groups (questions "
                f"{groups[views[g.view]].question.id!r} and {g.question.id!r}); expected one per view"
            )
        views[g.view] = i
    twins = [-1] * len(groups)
    for pair_id, views in by_pair.items():
        if len(views) != 2:
            (present,) = views
            missing = "rephrased" if present == "original" else "original"
            raise DataError(
                f"{method}: pair_id {pair_id!r} has its {present} group but no {missing} group; Co-rewarding-I "
                "needs both views of every question in the same step (is the rephrased set complete?)"
            )
        a, b = views["original"], views["rephrased"]
        twins[a], twins[b] = b, a
    return twins


@register
class CoRewardingI(RewardMethod):
    """``co_rewarding_i``: cross-view pseudo-labels between a question and its rephrasing."""

    name = "co_rewarding_i"
    needs_rephrased = True
    uses_pseudo_labels = True
    option_defaults: ClassVar[dict[str, Any]] = VOTING_OPTIONS
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = VOTING_CHOICES
    exact_vote: bool
    extraction: str

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        check_answers_filled(groups, self.name, extraction=self.extraction)
        twins = twin_indices(groups, self.name)
        own_labels, own_counts = elect_labels([g.answers for g in groups], exact=self.exact_vote)
        labels = [own_labels[twins[i]] for i in range(len(groups))]
        # whether the two views elect the same answer: one check per pair, in the same batched call
        firsts = [i for i, g in enumerate(groups) if g.view == "original"]
        cross = [(own_labels[i], own_labels[twins[i]]) for i in firsts]
        rewards, agreement, cross_ok = reward_agreement(
            [g.answers for g in groups], labels, exact=self.exact_vote, extra_pairs=cross
        )
        metrics = {
            "pseudo_label/vote_share": vote_share(own_counts, [g.size for g in groups]),
            "co_rewarding/view_agreement": sum(cross_ok) / len(cross_ok) if cross_ok else 0.0,
        }
        return RewardOutput(rewards=rewards, pseudo_labels=labels, metrics=metrics, agreement=agreement)


@register
class CoRewardingII(RewardMethod):
    """``co_rewarding_ii``: the EMA teacher's majority answer rewards the policy's rollouts.

    The teacher (a frozen copy when ``teacher.ema`` is off, the paper's ablation) is the trainer's business;
    here only ``teacher_answers`` matter. The policy's own answers never vote.
    """

    name = "co_rewarding_ii"
    needs_teacher = True
    uses_pseudo_labels = True
    option_defaults: ClassVar[dict[str, Any]] = VOTING_OPTIONS
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = VOTING_CHOICES
    exact_vote: bool
    extraction: str

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        check_answers_filled(groups, self.name, teacher=True, extraction=self.extraction)
        teacher_answers = [list(g.teacher_answers or []) for g in groups]
        labels, counts = elect_labels(teacher_answers, exact=self.exact_vote)
        rewards, agreement, _ = reward_agreement([g.answers for g in groups], labels, exact=self.exact_vote)
        metrics = {"teacher/vote_share": vote_share(counts, [len(t) for t in teacher_answers])}
        return RewardOutput(rewards=rewards, pseudo_labels=labels, metrics=metrics, agreement=agreement)
