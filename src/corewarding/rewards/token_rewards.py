"""Label-free baselines that score a rollout by the policy's own confidence while writing it.

* ``self_certainty`` (Intuitor): mean over response tokens of KL(Uniform || p); higher = more certain.
* ``entropy`` (RENT): the negative mean token entropy; lower entropy = higher reward.

The trainer computes both statistics from full-vocabulary logits (``rewards.token_stats``) and stores them
in ``rollout.extra``; these classes only read them, so they stay free of torch.
"""

from __future__ import annotations

import math

from corewarding.rewards.base import RewardMethod, RewardOutput, RolloutGroup, register


def _read_stat(group: RolloutGroup, key: str, method: str) -> list[float]:
    values = []
    for k, r in enumerate(group.rollouts):
        if key not in r.extra:
            raise ValueError(
                f"{method}: rollout {k} of question {group.question.id!r} ({group.view}) has no "
                f"extra[{key!r}]; the trainer must fill token statistics for methods with needs_token_stats"
            )
        value = float(r.extra[key])
        if not math.isfinite(value):
            raise ValueError(
                f"{method}: rollout {k} of question {group.question.id!r} has non-finite extra[{key!r}]={value}"
            )
        values.append(value)
    return values


def _mean(rows: list[list[float]]) -> float:
    flat = [v for row in rows for v in row]
    return sum(flat) / len(flat) if flat else 0.0


@register
class SelfCertaintyReward(RewardMethod):
    """``self_certainty``: reward = the rollout's mean token self-certainty (nats)."""

    name = "self_certainty"
    needs_token_stats = True
    uses_pseudo_labels = False

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        rewards = [_read_stat(g, "self_certainty", self.name) for g in groups]
        return RewardOutput(
            rewards=rewards,
            pseudo_labels=[None] * len(groups),
            metrics={"token_stats/self_certainty": _mean(rewards)},
        )


@register
class EntropyReward(RewardMethod):
    """``entropy``: reward = −(the rollout's mean token entropy, nats)."""

    name = "entropy"
    needs_token_stats = True
    uses_pseudo_labels = False

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        entropies = [_read_stat(g, "entropy", self.name) for g in groups]
        return RewardOutput(
            rewards=[[-h for h in row] for row in entropies],
            pseudo_labels=[None] * len(groups),
            metrics={"token_stats/entropy": _mean(entropies)},
        )
