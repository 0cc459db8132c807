"""Every reward method on hand-built groups whose answers (and so whose rewards) are known in advance."""

from __future__ import annotations

import pytest

from corewarding.data.question import Question
from corewarding.errors import ConfigError, DataError
from corewarding.rewards import REGISTRY, RewardOutput, RolloutGroup, fill_answers, get_reward_method
from corewarding.rollout.types import Rollout


def solution(answer: str | None) -> str:
    """A response whose final answer is ``answer`` (no ``\\boxed`` at all when None)."""
    if answer is None:
        return "I tried a few things but could not finish the computation."
    return f"Working through the algebra step by step, the result is \\boxed{{{answer}}}."


def group(
    answers: list[str | None],
    gold: str | None = None,
    view: str = "original",
    pair_id: str = "q1",
    teacher: list[str | None] | None = None,
    stats: list[dict] | None = None,
) -> RolloutGroup:
    question = Question.from_text(id=f"{pair_id}-{view}", question="What is x?", gold=gold, source="test")
    rollouts = [
        Rollout(
            prompt_ids=[1, 2], response_ids=[3, 4, 5], text=solution(a), extra=dict(stats[k]) if stats else {}
        )
        for k, a in enumerate(answers)
    ]
    teacher_rollouts = (
        None
        if teacher is None
        else [Rollout(prompt_ids=[1], response_ids=[3], text=solution(a)) for a in teacher]
    )
    g = RolloutGroup(
        question=question, view=view, pair_id=pair_id, rollouts=rollouts, teacher_rollouts=teacher_rollouts
    )
    fill_answers([g])
    return g


def run(method: str, groups: list[RolloutGroup], **options) -> RewardOutput:
    return get_reward_method(method, **options).score(groups)


# ---------------------------------------------------------------- registry


def test_registry_names_and_flags():
    assert set(REGISTRY) >= {
        "gt",
        "majority_vote",
        "self_certainty",
        "entropy",
        "co_rewarding_i",
        "co_rewarding_ii",
    }
    assert REGISTRY["co_rewarding_i"].needs_rephrased and not REGISTRY["co_rewarding_i"].needs_teacher
    assert REGISTRY["co_rewarding_ii"].needs_teacher and not REGISTRY["co_rewarding_ii"].needs_rephrased
    assert REGISTRY["self_certainty"].needs_token_stats and REGISTRY["entropy"].needs_token_stats
    assert not REGISTRY["majority_vote"].needs_token_stats
    assert [n for n, c in sorted(REGISTRY.items()) if c.uses_pseudo_labels] == [
        "co_rewarding_i",
        "co_rewarding_ii",
        "majority_vote",
    ]


def test_unknown_method_and_bad_options_are_config_errors():
    with pytest.raises(
        ConfigError, match=r"unknown reward method 'co_reward'.*co_rewarding_i.*majority_vote"
    ):
        get_reward_method("co_reward")
    with pytest.raises(ConfigError, match=r"exact_votes.*accepted options: exact_vote"):
        get_reward_method("majority_vote", exact_votes=True)
    with pytest.raises(ConfigError, match="accepted options: none"):
        get_reward_method("entropy", exact_vote=True)
    with pytest.raises(ConfigError, match="expected bool"):
        get_reward_method("co_rewarding_i", exact_vote="yes")
    assert get_reward_method("co_rewarding_ii", exact_vote=True).exact_vote is True


# ---------------------------------------------------------------- ground truth


def test_gt_uses_equivalence_with_gold():
    g = group(["\\frac12", "0.5", "1/3", None, "\\dfrac{1}{2}"], gold="\\frac{1}{2}")
    out = run("gt", [g])
    assert out.rewards == [[1.0, 1.0, 0.0, 0.0, 1.0]]
    assert out.pseudo_labels == [None]


def test_gt_without_gold_names_the_question():
    with pytest.raises(DataError, match=r"'q9-original'.*gold"):
        run("gt", [group(["1"], gold=None, pair_id="q9")])


# ---------------------------------------------------------------- majority vote


def test_majority_vote_merges_equivalent_answers():
    # 0.5, \frac{1}{2} and 1/2 are one answer with 3 votes; 3 has 2
    g = group(["0.5", "3", "\\frac{1}{2}", "1/2", "3"])
    out = run("majority_vote", [g])
    assert out.pseudo_labels == ["0.5"]
    assert out.rewards == [[1.0, 0.0, 1.0, 1.0, 0.0]]
    assert out.agreement == [[True, False, True, True, False]]
    assert out.metrics["pseudo_label/vote_share"] == pytest.approx(3 / 5)


def test_majority_vote_exact_reproduces_string_voting():
    # as strings, "3" (2 votes) beats each spelling of one half (1 vote each), and only "3" matches it
    out = run("majority_vote", [group(["0.5", "3", "\\frac{1}{2}", "1/2", "3"])], exact_vote=True)
    assert out.pseudo_labels == ["3"]
    assert out.rewards == [[0.0, 1.0, 0.0, 0.0, 1.0]]


def test_majority_vote_tie_goes_to_first_seen_and_missing_answers_get_zero():
    out = run("majority_vote", [group(["8", "7", None, "7", "8"])])
    assert out.pseudo_labels == ["8"]
    assert out.rewards == [[1.0, 0.0, 0.0, 0.0, 1.0]]


def test_majority_vote_without_any_answer_gives_empty_label_and_zero_reward():
    out = run("majority_vote", [group([None, None, None])])
    assert out.pseudo_labels == [None]
    assert out.rewards == [[0.0, 0.0, 0.0]]


def test_groups_are_voted_independently():
    out = run("majority_vote", [group(["1", "1", "2"], pair_id="a"), group(["2", "2", "1"], pair_id="b")])
    assert out.pseudo_labels == ["1", "2"]
    assert out.rewards == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]


# ---------------------------------------------------------------- Co-rewarding-I


def test_co_rewarding_i_rewards_each_view_with_the_other_views_majority():
    original = group(["4", "4", "5", None], view="original")  # majority 4
    rephrased = group(["5", "5.0", "5", "4"], view="rephrased")  # majority 5
    out = run("co_rewarding_i", [original, rephrased])
    assert out.pseudo_labels == ["5", "4"]  # each group's label comes from its twin
    assert out.rewards == [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    assert out.metrics["co_rewarding/view_agreement"] == 0.0


def test_co_rewarding_i_pairs_by_pair_id_in_any_order():
    groups = [
        group(["2", "2", "3"], view="rephrased", pair_id="b"),
        group(["7", "7", "1"], view="original", pair_id="a"),
        group(["2", "3", "3"], view="original", pair_id="b"),
        group(["7", "1", "1"], view="rephrased", pair_id="a"),
    ]
    out = run("co_rewarding_i", groups)
    # b: original majority 3 labels the rephrased group, rephrased majority 2 labels the original group
    # a: original majority 7 labels the rephrased group, rephrased majority 1 labels the original group
    assert out.pseudo_labels == ["3", "1", "2", "7"]
    assert out.rewards == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_co_rewarding_i_empty_twin_label_zeroes_the_group():
    original = group(["6", "6", "2"], view="original")
    rephrased = group([None, None, None], view="rephrased")
    out = run("co_rewarding_i", [original, rephrased])
    assert out.pseudo_labels == [None, "6"]
    assert out.rewards == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # rephrased has no answers to match "6"
    agreeing = run("co_rewarding_i", [group(["6", "6", "2"]), group(["6", None, "2"], view="rephrased")])
    assert agreeing.rewards == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert agreeing.metrics["co_rewarding/view_agreement"] == 1.0


def test_co_rewarding_i_missing_or_duplicate_twin_is_a_clear_error():
    with pytest.raises(DataError, match=r"pair_id 'q1' has its original group but no rephrased group"):
        run("co_rewarding_i", [group(["1"], view="original")])
    with pytest.raises(DataError, match=r"pair_id 'q1' has two rephrased groups"):
        run("co_rewarding_i", [group(["1"], view="rephrased"), group(["1"], view="rephrased")])
    with pytest.raises(DataError, match="view 'paraphrase'"):
        run("co_rewarding_i", [group(["1"], view="paraphrase")])


# ---------------------------------------------------------------- Co-rewarding-II


def test_co_rewarding_ii_rewards_the_policy_with_the_teachers_majority():
    # the policy's own majority would be 3; the teacher's is 2 (written 2 and 2.0)
    g = group(["3", "3", "2", None], teacher=["2", "2.0", "3", None, "2"])
    out = run("co_rewarding_ii", [g])
    assert out.pseudo_labels == ["2"]
    assert out.rewards == [[0.0, 0.0, 1.0, 0.0]]
    assert out.metrics["teacher/vote_share"] == pytest.approx(3 / 5)


def test_co_rewarding_ii_needs_teacher_rollouts():
    with pytest.raises(ValueError, match="no teacher_rollouts"):
        run("co_rewarding_ii", [group(["1", "1"])])


def test_co_rewarding_ii_teacher_without_answers_gives_zero_reward():
    out = run("co_rewarding_ii", [group(["1", "1"], teacher=[None, None])])
    assert out.pseudo_labels == [None]
    assert out.rewards == [[0.0, 0.0]]


def test_methods_refuse_groups_whose_answers_were_not_extracted():
    g = group(["1", "1"])
    g.answers = []
    with pytest.raises(ValueError, match="fill_answers"):
        run("majority_vote", [g])


# ---------------------------------------------------------------- token statistics


def test_token_stat_rewards_read_rollout_extras():
    stats = [{"entropy": 0.5, "self_certainty": 2.0}, {"entropy": 1.5, "self_certainty": 0.25}]
    g = group(["1", None], stats=stats)
    sc = run("self_certainty", [g])
    ent = run("entropy", [g])
    assert sc.rewards == [[2.0, 0.25]]
    assert ent.rewards == [[-0.5, -1.5]]  # lower entropy, higher reward
    assert sc.pseudo_labels == ent.pseudo_labels == [None]
    assert ent.metrics["token_stats/entropy"] == pytest.approx(1.0)


def test_token_stat_rewards_fail_clearly_without_stats():
    with pytest.raises(ValueError, match=r"extra\['entropy'\]"):
        run("entropy", [group(["1"])])
    with pytest.raises(ValueError, match="non-finite"):
        run("self_certainty", [group(["1"], stats=[{"self_certainty": float("nan")}])])


# ---------------------------------------------------------------- gold never enters self-supervised rewards


@pytest.mark.parametrize(
    "method", ["majority_vote", "co_rewarding_i", "co_rewarding_ii", "self_certainty", "entropy"]
)
def test_self_supervised_rewards_ignore_gold(method):
    def build(gold: str | None) -> list[RolloutGroup]:
        stats = [{"entropy": 0.1 * k, "self_certainty": 1.0 / (k + 1)} for k in range(4)]
        return [
            group(["4", "4", "5", None], gold=gold, view="original", teacher=["5", "5", "4"], stats=stats),
            group(["5", "4", "5", "5"], gold=gold, view="rephrased", teacher=["4", "4"], stats=stats),
        ]

    right, wrong, absent = (run(method, build(gold)) for gold in ("4", "17", None))
    assert right.rewards == wrong.rewards == absent.rewards
    assert right.pseudo_labels == wrong.pseudo_labels == absent.pseudo_labels
    assert any(r for row in right.rewards for r in row)  # a non-trivial case


# ---------------------------------------------------------------- silence is never rewarded


@pytest.mark.parametrize("exact_vote", [False, True])
def test_no_answer_never_matches_a_missing_label_in_any_voting_method(exact_vote):
    """A group whose voters all stayed silent has no label; a silent rollout must not "match" it. With the
    paper's exact-string rule this is where a naive ``pred == label`` would reward None == None."""
    silent = [None, None, None]
    mv = run("majority_vote", [group(silent)], exact_vote=exact_vote)
    assert mv.pseudo_labels == [None] and mv.rewards == [[0.0, 0.0, 0.0]]
    ci = run(
        "co_rewarding_i",
        [group([None, "4", None], view="original"), group(silent, view="rephrased")],
        exact_vote=exact_vote,
    )
    # the original view's silent rollouts face the rephrased view's missing label; the rephrased view's
    # silent rollouts face label "4"
    assert ci.pseudo_labels == [None, "4"]
    assert ci.rewards == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    cii = run("co_rewarding_ii", [group([None, "2", None], teacher=silent)], exact_vote=exact_vote)
    assert cii.pseudo_labels == [None] and cii.rewards == [[0.0, 0.0, 0.0]]
    # and blank boxes are silence too (\boxed{} and \boxed{ })
    blank = group(["", " ", "3"])
    assert blank.answers[:2] == [None, None]
    out = run("majority_vote", [blank], exact_vote=exact_vote)
    assert out.pseudo_labels == ["3"] and out.rewards == [[0.0, 0.0, 1.0]]
