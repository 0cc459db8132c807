"""A reward plug-in, the README's example: ``method=plugin_example:LengthPenalizedVote``."""

from typing import Any, ClassVar

from corewarding.rewards import RewardMethod, RewardOutput, RolloutGroup, voting


class LengthPenalizedVote(RewardMethod):
    """Majority vote (1 for agreeing with the group's majority answer) minus ``length_penalty`` times the
    response's length relative to the longest of its group: of two agreeing answers, the shorter earns more."""

    name = "length_penalized_vote"
    uses_pseudo_labels = True
    option_defaults: ClassVar[dict[str, Any]] = {**voting.VOTING_OPTIONS, "length_penalty": 0.1}
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = voting.VOTING_CHOICES

    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        answers = [g.answers for g in groups]
        labels, counts = voting.elect_labels(answers, exact=self.exact_vote)
        votes, agreement, _ = voting.reward_agreement(answers, labels, exact=self.exact_vote)
        rewards, penalties = [], []
        for g, row in zip(groups, votes, strict=True):
            longest = max(1, *(r.num_response_tokens for r in g.rollouts))
            penalty = [self.length_penalty * r.num_response_tokens / longest for r in g.rollouts]
            rewards.append([v - p for v, p in zip(row, penalty, strict=True)])
            penalties += penalty
        metrics = {
            "pseudo_label/vote_share": voting.vote_share(counts, [g.size for g in groups]),
            "length_penalty/mean": sum(penalties) / len(penalties),
        }
        return RewardOutput(rewards, labels, metrics, agreement)
