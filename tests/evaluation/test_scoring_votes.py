"""score_completions on hand-built completions: maj@k grades the vote, and questions with different sample
counts are averaged per question."""

from __future__ import annotations

import pytest

from corewarding.data.question import Question
from corewarding.evaluation.evaluate import Completion, score_completions
from corewarding.evaluation.metrics import summarize


def _question(qid: str, gold: str) -> Question:
    return Question.from_text(id=qid, question=f"Question {qid}?", gold=gold, source="test")


def _completions(qid: str, answers: list[str | None]) -> list[Completion]:
    return [
        Completion(qid, i, "I give up." if a is None else f"So the answer is \\boxed{{{a}}}.", num_tokens=5)
        for i, a in enumerate(answers)
    ]


def test_maj_at_k_grades_the_voted_answer_not_the_first_sample():
    # q1: the first sample is right but the vote (7, three votes) is wrong; q2: the first sample is wrong but
    # the vote (4 = 4.0, three votes) is right
    questions = [_question("q1", "3"), _question("q2", "4")]
    completions = _completions("q1", ["3", "7", "7", "7"]) + _completions("q2", ["5", "4", "4.0", "4"])
    result = score_completions(questions, completions)
    assert result.majority == {"q1": ("7", 3), "q2": ("4", 3)}
    assert result.metrics["maj@4"] == pytest.approx(0.5)
    first_sample_right = [c.correct for c in completions if c.sample_index == 0]
    assert first_sample_right == [True, False]  # grading the first sample would also give 0.5 ...
    swapped = [_question("q1", "7"), _question("q2", "5")]  # ... so flip the golds: the vote is right once
    assert score_completions(swapped, completions).metrics["maj@4"] == pytest.approx(0.5)
    both_votes_right = [_question("q1", "7"), _question("q2", "4.0")]
    assert score_completions(both_votes_right, completions).metrics["maj@4"] == 1.0  # first samples: 0/2


def test_avg_and_pass_at_k_average_per_question_when_sample_counts_differ():
    # q1 has 2 samples (1 right), q2 has 4 (all right): avg is the mean of per-question accuracies
    # (0.5 + 1) / 2, not the pooled 5/6
    questions = [_question("q1", "1"), _question("q2", "2")]
    completions = _completions("q1", ["1", "9"]) + _completions("q2", ["2", "2", "2", "2"])
    m = score_completions(questions, completions).metrics
    assert m["avg@2"] == pytest.approx(0.75)
    assert m["avg@2"] != pytest.approx(5 / 6)
    assert m["pass@2"] == pytest.approx((1.0 + 1.0) / 2)
    # pass@1 from the same samples: per question c/n, 0.5 and 1.0
    m1 = summarize([[True, False], [True, True, True, True]], [True, True], extra_pass_ks=[1])
    assert m1["pass@1"] == pytest.approx(0.75) and m1["avg@2"] == pytest.approx(0.75)
    # a question whose 3 samples include one right: pass@2 = 1 - C(2,2)/C(3,2) = 2/3, on its own samples
    m3 = summarize([[True, False, False], [False, False, False, False]], [False, False], k=2)
    assert m3["pass@2"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_silent_samples_are_wrong_and_do_not_vote():
    questions = [_question("q1", "2")]
    completions = _completions("q1", [None, None, "2"])
    result = score_completions(questions, completions)
    assert result.majority["q1"] == ("2", 1)
    assert [c.correct for c in completions] == [False, False, True]
    assert result.metrics["no_answer_frac"] == pytest.approx(2 / 3)
    assert result.metrics["maj@3"] == 1.0
