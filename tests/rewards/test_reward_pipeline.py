"""score_step: answer extraction, method-independent metrics, gold kept out of rewards, batching."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from corewarding.data.question import Question
from corewarding.rewards import (
    RewardMethod,
    RewardOutput,
    RolloutGroup,
    get_reward_method,
    matching,
    score_step,
)
from corewarding.rollout.types import Rollout


def solution(answer: str | None) -> str:
    if answer is None:
        return "Let me think... I am not sure how to finish."
    return f"Putting it together, the final answer is \\boxed{{{answer}}}."


def group(
    answers, gold=None, view="original", pair_id="q", teacher=None, question="What is x?"
) -> RolloutGroup:
    q = Question.from_text(id=pair_id, question=question, gold=gold, source="test")
    teacher_rollouts = None if teacher is None else [Rollout([1], [2], solution(a)) for a in teacher]
    return RolloutGroup(
        question=q,
        view=view,
        pair_id=pair_id,
        rollouts=[Rollout([1], [2, 3], solution(a)) for a in answers],
        teacher_rollouts=teacher_rollouts,
    )


def test_metrics_by_hand_for_majority_vote():
    groups = [
        group(["4", "4", "5", None], gold="4", view="original", pair_id="a"),  # label 4, rewards 1 1 0 0
        group(["5", "5", "4", "5"], gold="4", view="rephrased", pair_id="a"),  # label 5, rewards 1 1 0 1
        group([None, None], gold=None, view="original", pair_id="b"),  # no answers: empty label
    ]
    s = score_step(get_reward_method("majority_vote"), groups)
    assert groups[0].answers == ["4", "4", "5", None]  # extracted by the pipeline
    assert s.rewards == [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 0.0]]
    assert s.pseudo_labels == ["4", "5", None]
    assert s.correct == [[True, True, False, False], [False, False, True, False], [None, None]]
    m = s.metrics
    assert m["reward/mean"] == pytest.approx(5 / 10)
    assert m["reward/original"] == pytest.approx(2 / 6)
    assert m["reward/rephrased"] == pytest.approx(3 / 4)
    assert m["reward/zero_std_frac"] == pytest.approx(1 / 3)
    assert m["rollout/answer_frac"] == pytest.approx(7 / 10)
    assert m["rollout/accuracy"] == pytest.approx(3 / 8)  # over the 8 rollouts whose question has gold
    assert m["pseudo_label/accuracy"] == pytest.approx(1 / 2)  # 4 right, 5 wrong; "b" has no gold
    assert m["pseudo_label/empty_frac"] == pytest.approx(1 / 3)
    assert m["pseudo_label/agreement"] == pytest.approx(5 / 10)
    assert m["pseudo_label/vote_share"] > 0  # the method's own metrics are kept
    assert "teacher/accuracy" not in m


def test_gold_changes_metrics_but_never_rewards():
    def build(gold):
        return [
            group(["\\frac12", "0.5", "2"], gold=gold, view="original", pair_id="p", teacher=["2", "2"]),
            group(["1/2", "3", "3"], gold=gold, view="rephrased", pair_id="p", teacher=["2"]),
        ]

    for method in ("majority_vote", "co_rewarding_i", "co_rewarding_ii"):
        right = score_step(get_reward_method(method), build("\\frac{1}{2}"))
        wrong = score_step(get_reward_method(method), build("99"))
        assert right.rewards == wrong.rewards, method
        assert right.pseudo_labels == wrong.pseudo_labels, method
        assert right.metrics["rollout/accuracy"] == pytest.approx(3 / 6)
        assert wrong.metrics["rollout/accuracy"] == 0.0
    # Co-rewarding-I: the original view is labelled 3 by the rephrased view, which is labelled 1/2
    co = score_step(get_reward_method("co_rewarding_i"), build("\\frac{1}{2}"))
    assert co.pseudo_labels == ["3", "\\frac12"]
    assert co.metrics["pseudo_label/accuracy"] == pytest.approx(1 / 2)
    assert co.rewards == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_teacher_metrics():
    g = group(["2", "3"], gold="2", teacher=["2", "2.0", "3", None])
    s = score_step(get_reward_method("co_rewarding_ii"), [g])
    assert s.rewards == [[1.0, 0.0]]
    assert s.metrics["teacher/answer_frac"] == pytest.approx(3 / 4)
    assert s.metrics["teacher/accuracy"] == pytest.approx(2 / 4)
    assert s.metrics["pseudo_label/accuracy"] == 1.0


def test_extraction_errors_cost_only_that_rollout(monkeypatch, caplog):
    real = matching.extract_answer

    def flaky(text: str, extraction: str = "lenient"):
        if "7" in text:
            raise RecursionError("pathological nesting")
        return real(text, extraction)

    monkeypatch.setattr(matching, "extract_answer", flaky)
    g = group(["7", "5", "5"], gold="5")
    s = score_step(get_reward_method("majority_vote"), [g])
    assert g.answers == [None, "5", "5"]
    assert s.rewards == [[0.0, 1.0, 1.0]]
    assert "answer extraction failed" in caplog.text


class FixedLabel(RewardMethod):
    """A method that labels every group "4" and reports no agreement, so the pipeline must compute it."""

    name = "fixed_label_for_test"
    uses_pseudo_labels = True

    def score(self, groups):
        return RewardOutput(rewards=[[0.5] * g.size for g in groups], pseudo_labels=["4"] * len(groups))


def test_all_metric_checks_of_a_step_go_through_one_batched_call(monkeypatch):
    calls = []
    real = matching.batch_equivalent

    def recording(pairs, timeout=2.0):
        calls.append(list(pairs))
        return real(pairs, timeout=timeout)

    monkeypatch.setattr(matching, "batch_equivalent", recording)
    groups = [group(["4", "4.0", "8"], gold="4", pair_id="a"), group(["2", None], gold=None, pair_id="b")]
    s = score_step(FixedLabel(), groups)
    assert len(calls) == 1
    # gold pairs for group a (3 rollouts + its label) and label pairs for all 5 rollouts
    assert len(calls[0]) == 3 + 1 + 5
    assert s.agreement == [[True, True, False], [False, False]]
    assert s.metrics["pseudo_label/agreement"] == pytest.approx(2 / 5)
    assert s.metrics["rollout/accuracy"] == pytest.approx(2 / 3)


def test_misaligned_method_output_is_caught():
    class Broken(FixedLabel):
        def score(self, groups):
            return RewardOutput(rewards=[[1.0]] * len(groups), pseudo_labels=[None] * len(groups))

    with pytest.raises(RuntimeError, match="1 rewards for group 0 with 3 rollouts"):
        score_step(Broken(), [group(["1", "2", "3"])])

    class NaNReward(FixedLabel):
        def score(self, groups):
            return RewardOutput(rewards=[[float("nan")] * g.size for g in groups], pseudo_labels=["1"])

    with pytest.raises(RuntimeError, match="non-finite"):
        score_step(NaNReward(), [group(["1"])])


def test_co_rewarding_i_on_real_math_pairs(shared_data):
    """Real MATH questions and their Qwen3-32B rephrasings (row i pairs with row i), fraction golds."""
    cols = ["prompt", "reward_model"]
    original = pq.read_table(shared_data / "train/math/train_original.parquet", columns=cols).slice(0, 400)
    rephrased = pq.read_table(shared_data / "train/math/train_rewrite_Qwen3-32B.parquet", columns=cols).slice(
        0, 400
    )
    rows = [
        (o, r)
        for o, r in zip(original.to_pylist(), rephrased.to_pylist(), strict=True)
        if "\\frac" in o["reward_model"]["ground_truth"]
    ][:3]
    assert len(rows) == 3
    groups = []
    for i, (o, r) in enumerate(rows):
        gold = o["reward_model"]["ground_truth"]
        assert r["reward_model"]["ground_truth"] == gold  # ground truths are unchanged between views
        wrong = f"{gold}+1"
        for view, row, answers in (
            ("original", o, [gold, f"${gold}$", wrong, None]),
            ("rephrased", r, [wrong, gold, gold, wrong.replace("+1", "+2")]),
        ):
            g = group(
                answers, gold=gold, view=view, pair_id=f"math-{i}", question=row["prompt"][-1]["content"]
            )
            groups.append(g)
    s = score_step(get_reward_method("co_rewarding_i"), groups)
    # both views elect the gold (2 votes each), so each view is rewarded where it matches the gold
    assert s.metrics["pseudo_label/accuracy"] == 1.0
    assert s.metrics["co_rewarding/view_agreement"] == 1.0
    for g, rewards, correct in zip(groups, s.rewards, s.correct, strict=True):
        assert rewards == [1.0 if c else 0.0 for c in correct], g.question.id
    assert s.rewards[0] == [1.0, 1.0, 0.0, 0.0]
