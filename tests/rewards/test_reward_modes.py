"""Hand-written rollouts under the paper's reward rules and under the improved (default) ones.

PAPER reproduces the released Co-rewarding code (reward managers co_reward.py, co_rewarding_II.py,
majority_voting.py; reward_score/math.py): last ``\\boxed{}`` only, exact-string votes and matches, the
Hendrycks string grader for ground truth. IMPROVED is the project default: lenient extraction, equivalence
classes, math-verify. Each case states the rewards the paper's rules give, then where the improved mode
differs.
"""

from __future__ import annotations

import pytest

from corewarding.config import load_config
from corewarding.data.question import Question
from corewarding.errors import ConfigError
from corewarding.rewards import RolloutGroup, fill_answers, get_reward_method, score_step
from corewarding.rollout.types import Rollout

PAPER = {"extraction": "boxed", "exact_vote": True}
IMPROVED = {"extraction": "lenient", "exact_vote": False}
PAPER_GT = {"extraction": "boxed", "gt_grader": "string"}
IMPROVED_GT = {"extraction": "lenient", "gt_grader": "math_verify"}


def group(
    texts: list[str],
    gold: str | None = None,
    view: str = "original",
    pair_id: str = "q",
    teacher: list[str] | None = None,
) -> RolloutGroup:
    question = Question.from_text(id=f"{pair_id}-{view}", question="What is x?", gold=gold, source="test")
    return RolloutGroup(
        question=question,
        view=view,
        pair_id=pair_id,
        rollouts=[Rollout(prompt_ids=[1], response_ids=[2], text=t) for t in texts],
        teacher_rollouts=None if teacher is None else [Rollout([1], [2], text=t) for t in teacher],
    )


def score(method: str, groups: list[RolloutGroup], options: dict):
    m = get_reward_method(method, **options)
    fill_answers(groups, overwrite=True, extraction=options["extraction"])
    return m.score(groups)


# ------------------------------------------------------------------------------------------------ extraction
def test_answers_read_under_each_mode():
    texts = [
        "\\boxed{\\boxed{5}}",
        "so $\\boxed 5$.",
        "\\boxed{ 5 }",
        "\\fbox{5}",
        "#### 5",
        "The answer is 5.",
        "I could not finish.",
        "\\boxed{5} hmm, \\boxed{",
    ]
    g = group(texts)
    fill_answers([g], extraction="boxed")
    assert g.answers == ["5", "5", " 5 ", None, None, None, None, None]
    fill_answers([g], extraction="lenient")  # another mode: the answers are read again
    assert g.answers == ["5", "5", "5", "5", "5", "5", None, "5"]


# ------------------------------------------------------------------------------------------------ majority vote
MAJORITY_CASES = {
    # name: (rollouts, paper label, paper rewards, improved label, improved rewards)
    "unboxed answers do not vote in the paper": (
        ["\\boxed{7}", "\\fbox{7}", "The answer is 7.", "\\boxed{8}", "\\boxed{8}"],
        "8",
        [0, 0, 0, 1, 1],
        "7",
        [1, 1, 1, 0, 0],
    ),
    "0.5 vs \\frac12: split by strings, one class by equivalence": (
        ["\\boxed{0.5}", "\\boxed{\\frac12}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{3}"],
        "3",
        [0, 0, 0, 1, 1],
        "0.5",
        [1, 1, 1, 0, 0],
    ),
    "nested and space-form boxes; the paper keeps inner spaces": (
        ["\\boxed{\\boxed{5}}", "\\boxed{5}", "$\\boxed 5$", "\\boxed{ 5 }"],
        "5",
        [1, 1, 1, 0],
        "5",
        [1, 1, 1, 1],
    ),
    "a tie goes to the first seen": (
        ["\\boxed{2}", "\\boxed{9}", "\\boxed{9}", "\\boxed{2}"],
        "2",
        [1, 0, 0, 1],
        "2",
        [1, 0, 0, 1],
    ),
    "which answers tie depends on the extraction": (
        ["#### 4", "\\boxed{6}", "\\boxed{4}"],
        "6",
        [0, 1, 0],
        "4",
        [1, 0, 1],
    ),
    "all empty in the paper: no label, nobody rewarded for silence": (
        ["no answer", "#### 5", "\\fbox{5}", "\\boxed{"],
        None,
        [0, 0, 0, 0],
        "5",
        [0, 1, 1, 0],
    ),
    "all empty in both": (
        ["I give up.", "\\boxed{}", "\\boxed{  }"],
        None,
        [0, 0, 0],
        None,
        [0, 0, 0],
    ),
}


@pytest.mark.parametrize("name", list(MAJORITY_CASES))
def test_majority_vote(name):
    texts, paper_label, paper_rewards, improved_label, improved_rewards = MAJORITY_CASES[name]
    out = score("majority_vote", [group(texts)], PAPER)
    assert out.pseudo_labels == [paper_label]
    assert out.rewards == [[float(r) for r in paper_rewards]]
    out = score("majority_vote", [group(texts)], IMPROVED)
    assert out.pseudo_labels == [improved_label]
    assert out.rewards == [[float(r) for r in improved_rewards]]


def test_all_cases_in_one_batch_give_the_same_rewards():
    """Groups are voted independently even when scored together (one batched call per step)."""
    for options, label_at, rewards_at in ((PAPER, 1, 2), (IMPROVED, 3, 4)):
        cases = list(MAJORITY_CASES.values())
        groups = [group(c[0], pair_id=f"q{i}") for i, c in enumerate(cases)]
        out = score("majority_vote", groups, options)
        assert out.pseudo_labels == [c[label_at] for c in cases]
        assert out.rewards == [[float(r) for r in c[rewards_at]] for c in cases]


# ------------------------------------------------------------------------------------------------ Co-rewarding-I
def test_co_rewarding_i():
    original = ["\\boxed{\\frac12}", "\\boxed{\\frac12}", "\\boxed{3}", "The answer is 3"]
    rephrased = ["\\boxed{0.5}", "\\boxed{0.5}", "\\boxed{0.5}", "\\boxed{\\frac12}"]
    silent = ["\\fbox{4}", "#### 4"]  # boxed nowhere: all empty under the paper's rule
    boxed = ["\\boxed{4}", "\\boxed{4}"]

    def groups():
        return [
            group(original, pair_id="a"),
            group(rephrased, view="rephrased", pair_id="a"),
            group(silent, pair_id="b"),
            group(boxed, view="rephrased", pair_id="b"),
        ]

    # paper: x votes \frac12 (2 of 3 answers), x' votes 0.5; each view is rewarded by the other's label as a
    # string, so only x''s own "\frac12" matches. Pair b: x has no label, so x' earns nothing; x's silent
    # rollouts earn nothing from x''s "4".
    out = score("co_rewarding_i", groups(), PAPER)
    assert out.pseudo_labels == ["0.5", "\\frac12", "4", None]
    assert out.rewards == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0], [0, 0]]
    assert out.metrics["co_rewarding/view_agreement"] == 0.0
    # improved: x is a 2-2 tie of \frac12 and 3 (first seen wins), x' is one class of four; the labels
    # agree, \frac12 = 0.5; the unboxed "4"s answer and match.
    out = score("co_rewarding_i", groups(), IMPROVED)
    assert out.pseudo_labels == ["0.5", "\\frac12", "4", "4"]
    assert out.rewards == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1], [1, 1]]
    assert out.metrics["co_rewarding/view_agreement"] == 1.0


# ------------------------------------------------------------------------------------------------ Co-rewarding-II
def test_co_rewarding_ii():
    teacher = ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{2}", "\\boxed{2}"]
    policy = ["\\boxed{2}", "\\boxed{0.5}", "\\fbox{2}", "\\boxed{\\boxed{2}}"]
    silent_teacher = ["#### 3", "The answer is 3", "\\fbox{3}"]
    policy_b = ["no answer at all", "\\boxed{3}"]

    def groups():
        return [
            group(policy, teacher=teacher, pair_id="a"),
            group(policy_b, teacher=silent_teacher, pair_id="b"),
        ]

    # paper: the teacher's strings vote "2" (2 votes against 1 for each spelling of one half); the policy's
    # \fbox{2} has no answer. The silent teacher gives no label: no reward at all.
    out = score("co_rewarding_ii", groups(), PAPER)
    assert out.pseudo_labels == ["2", None]
    assert out.rewards == [[1, 0, 0, 1], [0, 0]]
    # improved: the three halves are one class; the \fbox and "####" answers count.
    out = score("co_rewarding_ii", groups(), IMPROVED)
    assert out.pseudo_labels == ["\\frac{1}{2}", "3"]
    assert out.rewards == [[0, 1, 0, 0], [0, 1]]


# ------------------------------------------------------------------------------------------------ ground truth
def test_ground_truth():
    texts = [
        "\\boxed{0.5}",
        "\\boxed{\\frac12}",
        "\\boxed{1/2}",
        "\\boxed{\\dfrac{1}{2}}",
        "\\boxed{ \\frac {1} {2} }",
        "\\boxed{0.50}",
        "\\fbox{\\frac{1}{2}}",
        "The answer is \\frac{1}{2}",
        "\\boxed{\\frac{1}{3}}",
    ]
    out = score("gt", [group(texts, gold="\\frac{1}{2}")], PAPER_GT)
    assert out.rewards == [[1, 1, 1, 1, 1, 0, 0, 0, 0]]
    out = score("gt", [group(texts, gold="\\frac{1}{2}")], IMPROVED_GT)
    assert out.rewards == [[1, 1, 1, 1, 1, 1, 1, 1, 0]]


def test_ground_truth_string_grader_on_integers():
    texts = ["\\boxed{10}", "\\boxed{10.0}", "\\boxed{x = 10}", "$\\boxed 10$", "#### 10"]
    assert score("gt", [group(texts, gold="10")], PAPER_GT).rewards == [[1, 0, 1, 1, 0]]
    assert score("gt", [group(texts, gold="10")], IMPROVED_GT).rewards[0][:2] == [1, 1]


def test_the_two_choices_are_independent():
    """gt_grader=string on lenient answers, math_verify on the paper's boxed answers."""
    texts = ["\\fbox{0.5}", "\\boxed{0.50}"]
    mixed = score("gt", [group(texts, gold="\\frac{1}{2}")], {"extraction": "lenient", "gt_grader": "string"})
    assert mixed.rewards == [[1, 0]]
    mixed = score(
        "gt", [group(texts, gold="\\frac{1}{2}")], {"extraction": "boxed", "gt_grader": "math_verify"}
    )
    assert mixed.rewards == [[0, 1]]


# ------------------------------------------------------------------------------------------------ plumbing
def test_score_step_reads_answers_the_way_the_method_does():
    texts = ["\\boxed{7}", "\\fbox{7}", "The answer is 7.", "\\boxed{8}", "\\boxed{8}"]
    paper = score_step(get_reward_method("majority_vote", **PAPER), [group(texts, gold="8")])
    assert paper.rewards == [[0, 0, 0, 1, 1]]
    assert paper.metrics["rollout/answer_frac"] == pytest.approx(3 / 5)
    assert paper.metrics["pseudo_label/accuracy"] == 1.0
    improved = score_step(get_reward_method("majority_vote", **IMPROVED), [group(texts, gold="8")])
    assert improved.rewards == [[1, 1, 1, 0, 0]]
    assert improved.metrics["rollout/answer_frac"] == 1.0
    assert improved.metrics["pseudo_label/accuracy"] == 0.0


def test_answers_read_under_another_mode_are_refused():
    g = group(["\\fbox{1}", "\\boxed{1}"])
    fill_answers([g], extraction="lenient")
    with pytest.raises(ValueError, match=r"extraction='lenient'.*extraction='boxed'"):
        get_reward_method("majority_vote", **PAPER).score([g])


def test_bad_option_values_are_config_errors():
    with pytest.raises(ConfigError, match="extraction='strict'; expected one of lenient, boxed"):
        get_reward_method("majority_vote", extraction="strict")
    with pytest.raises(ConfigError, match="gt_grader='exact'"):
        get_reward_method("gt", gt_grader="exact")
    with pytest.raises(ConfigError, match="accepted options: extraction, gt_grader"):
        get_reward_method("gt", exact_vote=True)


def test_the_paper_mode_overrides_reach_every_method():
    """``reward.*`` overrides select the mode; each method receives the options it takes."""
    from dataclasses import asdict

    from corewarding.rewards import REGISTRY

    overrides = ["reward.extraction=boxed", "reward.exact_vote=true", "reward.gt_grader=string"]
    cfg = load_config("configs/tiny-cpu.yaml", overrides)
    assert asdict(cfg.reward) == {"extraction": "boxed", "exact_vote": True, "gt_grader": "string"}
    for name, cls in REGISTRY.items():
        opts = {k: v for k, v in asdict(cfg.reward).items() if k in cls.option_defaults}
        method = get_reward_method(name, **opts)
        for key, value in opts.items():
            assert getattr(method, key) == value, (name, key)
    assert load_config("configs/tiny-cpu.yaml").reward.extraction == "lenient"
