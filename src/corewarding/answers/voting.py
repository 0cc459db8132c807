"""Majority vote over sampled answers, where equivalent answers are one candidate.

Co-rewarding's pseudo-labels are majority answers. Voting by exact string (``exact``, the paper's rule)
splits ``\\frac12``, ``0.5`` and ``1/2`` into three weak candidates; voting by equivalence merges them.
Classes are built greedily in first-seen order: each answer joins the first class whose representative
(its first-seen member) it is equivalent to, else it founds a new class. That is deterministic and needs
only answer-vs-representative comparisons, which ``batch_vote`` runs in rounds, one round for all groups
at once, so the worker pool sees a whole training step's comparisons together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corewarding.answers.equivalence import DEFAULT_TIMEOUT_S, batch_equivalent, normalize


@dataclass
class _Group:
    """Voting state of one group: distinct answers in first-seen order, classes found so far."""

    firsts: dict[str, str] = field(default_factory=dict)  # key -> first original string with that key
    counts: dict[str, int] = field(default_factory=dict)  # key -> votes for exactly that key
    classes: list[tuple[str, int]] = field(default_factory=list)  # (representative key, size)
    remaining: list[str] = field(default_factory=list)  # keys not yet placed in a class

    def winner(self) -> tuple[str | None, int]:
        best: tuple[str | None, int] = (None, 0)
        for key, size in self.classes:  # strict ">" keeps the first-seen class on ties
            if size > best[1]:
                best = (self.firsts[key], size)
        return best


def vote(
    answers: Sequence[str | None], exact: bool = False, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[str | None, int]:
    """The majority answer of ``answers`` and its vote count; ``(None, 0)`` when nobody answered.

    ``None`` (and blank) answers do not vote. With ``exact`` answers are compared as the strings given,
    whitespace included (the paper's ``Counter(answers).most_common(1)``: the extraction decides what the
    strings are, and the lenient extraction already trims them); otherwise by mathematical equivalence.
    The returned string is the winning class's first-seen member as written; ties go to the class seen
    first.
    """
    return batch_vote([answers], exact=exact, timeout=timeout)[0]


def batch_vote(
    groups: Sequence[Sequence[str | None]], exact: bool = False, timeout: float = DEFAULT_TIMEOUT_S
) -> list[tuple[str | None, int]]:
    """``vote`` for every group, sharing the worker pool across groups. Never raises."""
    states = [_tally(group, exact) for group in groups]
    if exact:
        for state in states:
            state.classes = [(key, state.counts[key]) for key in state.remaining]
            state.remaining = []
    while any(state.remaining for state in states):
        # One round: every group founds a class from its earliest unplaced answer, and every other
        # unplaced answer of the group is compared with that representative.
        pairs: list[tuple[str, str]] = []
        owners: list[tuple[int, str]] = []
        for g, state in enumerate(states):
            if not state.remaining:
                continue
            representative = state.remaining[0]
            for key in state.remaining[1:]:
                pairs.append((key, representative))
                owners.append((g, key))
        verdicts = batch_equivalent(pairs, timeout=timeout) if pairs else []
        joined: dict[int, set[str]] = {}
        for (g, key), same in zip(owners, verdicts, strict=True):
            if same:
                joined.setdefault(g, set()).add(key)
        for g, state in enumerate(states):
            if not state.remaining:
                continue
            representative, rest = state.remaining[0], state.remaining[1:]
            members = joined.get(g, set())
            size = state.counts[representative] + sum(state.counts[key] for key in members)
            state.classes.append((representative, size))
            state.remaining = [key for key in rest if key not in members]
    return [state.winner() for state in states]


def _tally(answers: Sequence[str | None], exact: bool) -> _Group:
    state = _Group()
    for answer in answers:
        if not isinstance(answer, str):
            continue
        if exact:
            if not answer or answer.isspace():
                continue
            key = answer
        else:
            key = normalize(answer)
            if not key:
                continue
        if key not in state.counts:
            state.firsts[key] = answer
            state.counts[key] = 0
            state.remaining.append(key)
        state.counts[key] += 1
    return state
