"""One step of scoring: extract answers, let the method reward, measure everything the same way.

Metrics that compare with ground truth live here, outside every method, so a self-supervised method can be
monitored against gold without gold ever reaching its reward. All gold-side (and, when the method did not
report it, label-side) equivalence checks of a step go through one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from corewarding.rewards.base import VIEWS, RewardMethod, RewardOutput, RolloutGroup
from corewarding.rewards.matching import fill_answers, match_pairs


@dataclass
class StepScores:
    """Scores aligned with the groups given to ``score_step``.

    ``correct[i][k]`` says whether rollout k of group i matches the gold answer (``None`` when the question
    has no gold); it is for metrics and logged samples only. ``agreement[i][k]`` says whether it matches the
    group's pseudo-label (``None`` for methods without pseudo-labels).
    """

    rewards: list[list[float]]
    pseudo_labels: list[str | None]
    correct: list[list[bool | None]]
    agreement: list[list[bool]] | None
    metrics: dict[str, float]


def _gold(group: RolloutGroup) -> str | None:
    gold = group.question.gold
    if gold is None:
        return None
    gold = str(gold).strip()
    return gold or None


def _mean(values: list[float] | list[bool]) -> float:
    return float(sum(values)) / len(values) if values else 0.0


def _validate(method: RewardMethod, groups: list[RolloutGroup], out: RewardOutput) -> None:
    """A method that returns misaligned or non-finite rewards would corrupt training silently; stop here."""
    who = f"reward method {method.name!r}"
    if len(out.rewards) != len(groups) or len(out.pseudo_labels) != len(groups):
        raise RuntimeError(
            f"{who} returned {len(out.rewards)} reward lists and {len(out.pseudo_labels)} pseudo-labels "
            f"for {len(groups)} groups"
        )
    for i, (g, row) in enumerate(zip(groups, out.rewards, strict=True)):
        if len(row) != g.size:
            raise RuntimeError(f"{who} returned {len(row)} rewards for group {i} with {g.size} rollouts")
        bad = [r for r in row if not isinstance(r, int | float) or not math.isfinite(r)]
        if bad:
            raise RuntimeError(f"{who} returned non-finite reward(s) {bad[:3]} for group {i}")
    if out.agreement is not None and [len(a) for a in out.agreement] != [g.size for g in groups]:
        raise RuntimeError(f"{who} returned agreement flags that are not aligned with the rollouts")


def score_step(method: RewardMethod, groups: list[RolloutGroup], timeout: float = 2.0) -> StepScores:
    """Reward every rollout of the step with ``method`` and compute the method-independent metrics.

    Metrics (all floats): ``reward/mean``, ``reward/original`` and ``reward/rephrased`` (for views present),
    ``reward/zero_std_frac`` (groups whose rewards are all equal, hence zero GRPO advantage),
    ``rollout/answer_frac``, ``rollout/accuracy`` (when any gold is present), and for methods with
    pseudo-labels ``pseudo_label/accuracy`` (over groups with gold), ``pseudo_label/empty_frac``,
    ``pseudo_label/agreement``; ``teacher/answer_frac`` and ``teacher/accuracy`` when teacher rollouts are
    present; plus whatever the method reports. Gold-side metrics always grade by math-verify equivalence,
    whatever the method's own grader, so runs under different reward modes (the paper's string rules or
    the improved ones) are measured alike.
    """
    # answers are read the way the method reads them (its ``extraction`` option; lenient for methods that
    # read no answers), so the metrics below grade what the reward saw
    fill_answers(groups, extraction=getattr(method, "extraction", "lenient"))
    out = method.score(groups)
    _validate(method, groups, out)
    rewards = [[float(r) for r in row] for row in out.rewards]
    labels = list(out.pseudo_labels)
    with_labels = method.uses_pseudo_labels

    # every gold-side and label-side comparison of the step, in one batched call
    pairs: list[tuple[str | None, str | None]] = []
    for g, label in zip(groups, labels, strict=True):
        gold = _gold(g)
        if gold is not None:
            pairs += [(a, gold) for a in g.answers]
            pairs += [(a, gold) for a in (g.teacher_answers or [])]
            if with_labels:
                pairs.append((label, gold))
        if with_labels and out.agreement is None:
            pairs += [(a, label) for a in g.answers]
    verdicts = iter(match_pairs(pairs, timeout=timeout))

    correct: list[list[bool | None]] = []
    teacher_correct: list[bool] = []
    label_correct: list[bool] = []
    computed_agreement: list[list[bool]] = []
    for g in groups:
        if _gold(g) is not None:
            correct.append([next(verdicts) for _ in g.answers])
            teacher_correct += [next(verdicts) for _ in g.teacher_answers or []]
            if with_labels:
                label_correct.append(next(verdicts))
        else:
            correct.append([None] * g.size)
        if with_labels and out.agreement is None:
            computed_agreement.append([next(verdicts) for _ in g.answers])
    agreement = out.agreement if out.agreement is not None else (computed_agreement if with_labels else None)

    all_rewards = [r for row in rewards for r in row]
    metrics: dict[str, float] = dict(out.metrics)
    metrics["reward/mean"] = _mean(all_rewards)
    for view in VIEWS:
        in_view = [r for g, row in zip(groups, rewards, strict=True) if g.view == view for r in row]
        if in_view:
            metrics[f"reward/{view}"] = _mean(in_view)
    sized = [row for row in rewards if row]
    metrics["reward/zero_std_frac"] = _mean([max(row) == min(row) for row in sized])
    metrics["rollout/answer_frac"] = _mean([a is not None for g in groups for a in g.answers])
    graded = [c for row in correct for c in row if c is not None]
    if graded:
        metrics["rollout/accuracy"] = _mean(graded)
    if with_labels:
        metrics["pseudo_label/empty_frac"] = _mean([label is None for label in labels])
        metrics["pseudo_label/agreement"] = _mean([a for row in agreement or [] for a in row])
        if label_correct:
            metrics["pseudo_label/accuracy"] = _mean(label_correct)
    teacher_answers = [a for g in groups for a in g.teacher_answers or []]
    if teacher_answers:
        metrics["teacher/answer_frac"] = _mean([a is not None for a in teacher_answers])
        if teacher_correct:
            metrics["teacher/accuracy"] = _mean(teacher_correct)
    return StepScores(
        rewards=rewards, pseudo_labels=labels, correct=correct, agreement=agreement, metrics=metrics
    )
