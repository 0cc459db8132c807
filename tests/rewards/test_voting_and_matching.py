"""The voting family's shared pieces one by one: electing labels, rewarding agreement, the vote share, and
the pair matching and grading under them (defaults, edge values, misaligned input)."""

from __future__ import annotations

import pytest

from corewarding.data.question import Question
from corewarding.rewards import RolloutGroup, matching
from corewarding.rewards.matching import fill_answers, grade_pairs, match_pairs, safe_extract
from corewarding.rewards.voting import elect_labels, reward_agreement, vote_share
from corewarding.rollout.types import Rollout


def test_elect_labels_votes_by_equivalence_by_default():
    assert elect_labels([["\\frac12", "0.5", "3"]]) == (["\\frac12"], [2])
    assert elect_labels([["\\frac12", "0.5", "3"]], exact=True) == (["\\frac12"], [1])


def test_a_group_without_answers_has_no_label_and_no_votes():
    assert elect_labels([[None, None], [], ["4", None]]) == ([None, None, "4"], [0, 0, 1])


def test_reward_agreement_matches_by_equivalence_by_default():
    rewards, agreement, extra = reward_agreement([["0.5", "1/2", "3"]], ["\\frac12"])
    assert rewards == [[1.0, 1.0, 0.0]] and agreement == [[True, True, False]] and extra == []
    rewards, _, _ = reward_agreement([["0.5", "1/2", "\\frac12"]], ["\\frac12"], exact=True)
    assert rewards == [[0.0, 0.0, 1.0]]


def test_reward_agreement_returns_the_extra_verdicts_after_the_groups():
    rewards, agreement, extra = reward_agreement(
        [["1", "2"], ["2"]], ["1", "2"], extra_pairs=[("1", "1.0"), ("1", "2")]
    )
    assert rewards == [[1.0, 0.0], [1.0]] and agreement == [[True, False], [True]]
    assert extra == [True, False]


def test_reward_agreement_refuses_labels_not_aligned_with_the_groups():
    with pytest.raises(ValueError):
        reward_agreement([["1"], ["2"]], ["1"])
    with pytest.raises(ValueError):
        reward_agreement([["1"]], ["1", "2"])


def test_vote_share_averages_over_groups_that_elected_a_label():
    assert vote_share([3, 1], [4, 4]) == pytest.approx((0.75 + 0.25) / 2)
    assert vote_share([3, 0], [4, 4]) == pytest.approx(0.75)  # a group without a label does not count
    assert vote_share([1], [1]) == 1.0  # a single voter is a unanimous class
    assert vote_share([2, 4, 1], [4, 4, 2]) == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert vote_share([0, 0], [4, 4]) == 0.0 and vote_share([], []) == 0.0
    with pytest.raises(ValueError):
        vote_share([1, 2], [4])


def test_exact_matching_needs_a_real_answer_on_both_sides():
    pairs = [("", ""), (" ", " "), (None, None), ("5", "5"), ("5", " 5"), ("", "5")]
    assert match_pairs(pairs, exact=True) == [False, False, False, True, False, False]


def test_grade_pairs_defaults_to_math_verify():
    pairs = [("6.0", "6"), ("3", "4"), (None, "4"), ("", "")]
    assert grade_pairs(pairs) == [True, False, False, False]
    assert grade_pairs(pairs, grader="string") == [False, False, False, False]  # 6.0 is not "6" as a string


def test_the_timeout_reaches_the_equivalence_checks(monkeypatch):
    seen: list[float] = []
    real = matching.batch_equivalent

    def recording(pairs, timeout=2.0, progress=None):
        seen.append(timeout)
        return real(pairs, timeout=timeout)

    monkeypatch.setattr(matching, "batch_equivalent", recording)
    assert grade_pairs([("0.5", "\\frac12")], timeout=4.5) == [True]
    assert grade_pairs([("0.5", "\\frac12")]) == [True]
    assert match_pairs([("1", "2")], timeout=0.5) == [False]
    assert match_pairs([("1", "2")]) == [False]
    assert seen == [4.5, 2.0, 0.5, 2.0]


def test_an_unknown_grader_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"^grader='hendrycks': expected one of math_verify, string$"):
        grade_pairs([("1", "1")], grader="hendrycks")


def _group(texts, teacher_texts=None) -> RolloutGroup:
    return RolloutGroup(
        question=Question.from_text(id="q", question="What is x?"),
        view="original",
        pair_id="q",
        rollouts=[Rollout([1], [2], t) for t in texts],
        teacher_rollouts=None if teacher_texts is None else [Rollout([1], [2], t) for t in teacher_texts],
    )


def test_safe_extract_reads_leniently_by_default():
    assert safe_extract("so it is 7. The answer is 7") == "7"
    assert safe_extract("so it is 7. The answer is 7", "boxed") is None
    with pytest.raises(ValueError, match=r"^extraction='strict': expected one of lenient, boxed$"):
        safe_extract("\\boxed{1}", "strict")


def test_a_failing_extraction_is_logged_with_its_error(monkeypatch, caplog):
    def boom(text, extraction):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(matching, "extract_answer", boom)
    with caplog.at_level("WARNING", logger="corewarding.rewards.matching"):
        assert safe_extract("\\boxed{1}") is None
    assert caplog.messages == [
        "answer extraction failed (RuntimeError: parser bug); treating the response as unanswered"
    ]


def test_answers_set_by_hand_are_kept():
    g = _group(["\\boxed{1}", "\\boxed{2}"], teacher_texts=["\\boxed{3}"])
    g.answers, g.teacher_answers = ["a", "b"], ["c"]
    fill_answers([g])
    assert g.answers == ["a", "b"] and g.teacher_answers == ["c"] and g.answers_extraction is None
    fill_answers([g], overwrite=True)
    assert g.answers == ["1", "2"] and g.teacher_answers == ["3"] and g.answers_extraction == "lenient"


def test_answers_read_under_another_extraction_are_read_again():
    g = _group(["The answer is 4", "\\boxed{5}"], teacher_texts=["The answer is 6"])
    fill_answers([g], extraction="boxed")
    assert g.answers == [None, "5"] and g.teacher_answers == [None]
    fill_answers([g], extraction="lenient")
    assert g.answers == ["4", "5"] and g.teacher_answers == ["6"] and g.answers_extraction == "lenient"
