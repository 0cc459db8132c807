"""Shared machinery of the majority-vote family (majority_vote, co_rewarding_i, co_rewarding_ii).

They differ only in *whose* answers elect the pseudo-label of a group; electing labels and rewarding
agreement with them is the same code, batched over the whole step.
"""

from __future__ import annotations

from collections.abc import Sequence

from corewarding.answers import EXTRACTIONS, batch_vote
from corewarding.rewards.matching import match_pairs

# The options every method of the family accepts (``reward.*`` in a training config): ``exact_vote`` votes
# and matches by exact answer string (the paper's rule) instead of equivalence classes; ``extraction`` is
# how answers are read from rollouts (``corewarding.answers.extract_answer``).
VOTING_OPTIONS = {"exact_vote": False, "extraction": "lenient"}
VOTING_CHOICES = {"extraction": EXTRACTIONS}


def elect_labels(
    voter_answers: Sequence[Sequence[str | None]], exact: bool = False
) -> tuple[list[str | None], list[int]]:
    """Majority answer (and its vote count) of each group of voters; ``None`` where nobody answered."""
    votes = batch_vote([list(a) for a in voter_answers], exact=exact)
    if len(votes) != len(voter_answers):
        raise RuntimeError(f"batch_vote returned {len(votes)} results for {len(voter_answers)} groups")
    labels = [label for label, _ in votes]
    counts = [int(count) if label is not None else 0 for label, count in votes]
    return labels, counts


def reward_agreement(
    answers_per_group: Sequence[Sequence[str | None]],
    labels: Sequence[str | None],
    exact: bool = False,
    extra_pairs: Sequence[tuple[str | None, str | None]] = (),
) -> tuple[list[list[float]], list[list[bool]], list[bool]]:
    """Reward 1.0 for each answer that matches its group's label, else 0.0 (also when the label is empty:
    a rollout without an answer never "matches" a group without a label).

    ``extra_pairs`` ride along in the same batched equivalence call (e.g. cross-view label agreement), so a
    method pays for one round of checks per step; their verdicts are the third return value.
    """
    pairs = [(a, label) for answers, label in zip(answers_per_group, labels, strict=True) for a in answers]
    flat = match_pairs([*pairs, *extra_pairs], exact=exact)
    agreement, pos = [], 0
    for answers in answers_per_group:
        agreement.append(flat[pos : pos + len(answers)])
        pos += len(answers)
    rewards = [[1.0 if ok else 0.0 for ok in row] for row in agreement]
    return rewards, agreement, flat[pos:]


def vote_share(counts: Sequence[int], sizes: Sequence[int]) -> float:
    """Mean fraction of voters in the winning class, over groups that elected a label (0.0 if none did)."""
    shares = [c / n for c, n in zip(counts, sizes, strict=True) if c > 0 and n > 0]
    return sum(shares) / len(shares) if shares else 0.0
