"""Reward methods: one class per method behind one interface, found by name in ``REGISTRY`` or, for a
plug-in, by import path (``method_class("package.module:ClassName")``).

Importing this package registers every built-in method. Token statistics (``rewards.token_stats``) need
torch and are imported separately by the trainer.
"""

from corewarding.rewards import co_rewarding, ground_truth, majority_vote, token_rewards  # noqa: F401
from corewarding.rewards.base import (
    REGISTRY,
    RewardMethod,
    RewardOutput,
    RolloutGroup,
    get_reward_method,
    method_class,
    register,
)
from corewarding.rewards.matching import fill_answers, match_pairs, safe_extract
from corewarding.rewards.pipeline import StepScores, score_step

__all__ = [
    "REGISTRY",
    "RewardMethod",
    "RewardOutput",
    "RolloutGroup",
    "StepScores",
    "fill_answers",
    "get_reward_method",
    "match_pairs",
    "method_class",
    "register",
    "safe_extract",
    "score_step",
]
