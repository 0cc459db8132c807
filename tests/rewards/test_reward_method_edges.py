"""Reward methods at their edges: the registry, the messages that name the method, options that must reach
every call, empty steps, and the pipeline's checks of what a method returns."""

from __future__ import annotations

import math
import sys
import types

import pytest

from corewarding.data.question import Question
from corewarding.errors import ConfigError, DataError
from corewarding.rewards import (
    RewardMethod,
    RewardOutput,
    RolloutGroup,
    fill_answers,
    get_reward_method,
    method_class,
    pipeline,
    score_step,
)
from corewarding.rewards import base as reward_base
from corewarding.rollout.types import Rollout


def solution(answer: str | None) -> str:
    return "No idea." if answer is None else f"So the answer is \\boxed{{{answer}}}."


def group(
    answers,
    gold=None,
    view="original",
    pair_id="q",
    teacher=None,
    texts=None,
    stats=None,
    fill="lenient",
    source="test",
) -> RolloutGroup:
    q = Question.from_text(id=f"{pair_id}-{view}", question="What is x?", gold=gold, source=source)
    texts = texts or [solution(a) for a in answers]
    g = RolloutGroup(
        question=q,
        view=view,
        pair_id=pair_id,
        rollouts=[Rollout([1], [2], t, extra=dict(stats[k]) if stats else {}) for k, t in enumerate(texts)],
        teacher_rollouts=None if teacher is None else [Rollout([1], [2], solution(a)) for a in teacher],
    )
    if fill:
        fill_answers([g], extraction=fill)
    return g


# ---------------------------------------------------------------- registry


@pytest.fixture
def registry(monkeypatch):
    fresh: dict = {}
    monkeypatch.setattr(reward_base, "REGISTRY", fresh)
    return fresh


def _method(name="demo", **attrs):
    def score(self, groups):
        return RewardOutput([[0.0] * g.size for g in groups], [None] * len(groups))

    return type("Demo", (RewardMethod,), {"name": name, "score": score, **attrs})


def test_register_adds_the_class_under_its_name(registry):
    cls = _method()
    assert reward_base.register(cls) is cls
    assert registry == {"demo": cls}
    assert reward_base.register(cls) is cls  # registering the same class again is harmless
    assert registry == {"demo": cls}


def test_register_refuses_a_second_class_for_a_taken_name(registry):
    reward_base.register(_method())
    with pytest.raises(ValueError, match=r"^reward method name 'demo' is already registered by Demo$"):
        reward_base.register(_method())


@pytest.mark.parametrize("name", [None, "", 5])
def test_register_needs_a_non_empty_string_name(registry, name):
    with pytest.raises(
        TypeError, match=r"^Demo must set a non-empty class attribute 'name' to be registered$"
    ):
        reward_base.register(_method(name=name))
    assert registry == {}


def test_register_needs_a_name_attribute(registry):
    nameless = _method()
    del nameless.name  # RewardMethod only annotates it
    with pytest.raises(
        TypeError, match=r"^Demo must set a non-empty class attribute 'name' to be registered$"
    ):
        reward_base.register(nameless)


def test_register_needs_the_pseudo_label_flag(registry):
    loose = type("Loose", (), {"name": "loose"})
    with pytest.raises(TypeError, match=r"^Loose must set the class attribute 'uses_pseudo_labels'$"):
        reward_base.register(loose)  # type: ignore[arg-type]
    assert registry == {}


def test_repr_and_options_show_every_option():
    mv = get_reward_method("majority_vote")
    assert mv.options == {"exact_vote": False, "extraction": "lenient"}
    assert repr(mv) == "MajorityVoteReward(exact_vote=False, extraction='lenient')"
    assert repr(get_reward_method("entropy")) == "EntropyReward()"


def test_unknown_options_are_all_named():
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) colour, size; accepted options: exact_vote, "
    ):
        get_reward_method("majority_vote", size=1, colour="red")


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        method_class("reinforce")
    assert "expected a registered name (co_rewarding_i, co_rewarding_ii, entropy, gt, majority_vote, " in str(
        err.value
    )
    assert str(err.value).endswith(
        "or an import path package.module:ClassName naming a RewardMethod subclass"
    )


@pytest.fixture
def plugin_module(monkeypatch):
    module = types.ModuleType("edge_plugins")

    class Outer:
        class Inner(RewardMethod):
            name = "inner"

            def score(self, groups):
                return RewardOutput([[1.0] * g.size for g in groups], [None] * len(groups))

    class EmptyName(Outer.Inner):
        name = ""

    class NotAMethod:
        pass

    module.Outer, module.EmptyName, module.NotAMethod = Outer, EmptyName, NotAMethod
    monkeypatch.setitem(sys.modules, "edge_plugins", module)
    return module


def test_a_plugin_may_be_a_nested_class(plugin_module):
    assert method_class("edge_plugins:Outer.Inner") is plugin_module.Outer.Inner
    with pytest.raises(ConfigError) as err:
        method_class("edge_plugins:Outer.Missing")
    assert str(err.value) == (
        "method='edge_plugins:Outer.Missing': module 'edge_plugins' has no attribute 'Outer.Missing'; expected "
        "an import path package.module:ClassName naming a RewardMethod subclass"
    )


def test_plugin_errors_say_what_was_expected(plugin_module):
    with pytest.raises(ConfigError) as err:
        method_class("edge_plugins:EmptyName")
    assert str(err.value) == (
        "method='edge_plugins:EmptyName': EmptyName must set the class attribute name (a non-empty string that "
        "its metrics, errors and default run directory use)"
    )
    with pytest.raises(ConfigError) as err:
        method_class("edge_plugins:NotAMethod")
    assert str(err.value).endswith(
        "not a RewardMethod; expected a subclass of corewarding.rewards.RewardMethod"
    )


def test_an_abstract_plugin_names_every_missing_method(plugin_module):
    class Half(RewardMethod):
        name = "half"

        @staticmethod
        def extra():  # a second abstract method besides score
            raise NotImplementedError

    Half.extra.__isabstractmethod__ = True
    Half.__abstractmethods__ = frozenset({"score", "extra"})
    plugin_module.Half = Half
    with pytest.raises(ConfigError, match=r"Half is abstract \(it does not implement extra, score\)$"):
        method_class("edge_plugins:Half")


def test_a_plugin_module_that_fails_to_import_is_named(monkeypatch, tmp_path):
    (tmp_path / "broken_edge_plugin.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        method_class("broken_edge_plugin:Method")
    assert str(err.value) == (
        "method='broken_edge_plugin:Method': importing module 'broken_edge_plugin' failed: "
        "No module named 'no_such_dependency_xyz'"
    )


def test_a_plugin_missing_from_the_path_and_the_current_directory(tmp_path, monkeypatch):
    """The current directory is tried last, then taken off ``sys.path`` again; the error names the module."""
    monkeypatch.chdir(tmp_path)
    path = [p for p in sys.path if p not in ("", str(tmp_path))]
    monkeypatch.setattr("sys.path", list(path))
    with pytest.raises(ConfigError) as err:
        method_class("nowhere_edge_plugin:Method")
    assert str(err.value) == (
        "method='nowhere_edge_plugin:Method': no module named 'nowhere_edge_plugin'; expected an importable "
        "module (installed, on PYTHONPATH, or in the current directory) holding the RewardMethod subclass"
    )
    assert sys.path == path


def test_a_missing_plugin_leaves_sys_path_as_it_was(tmp_path, monkeypatch):
    """With the current directory already on ``sys.path`` nothing is added, tried again or moved."""
    monkeypatch.chdir(tmp_path)
    path = [str(tmp_path), *(p for p in sys.path if p not in ("", str(tmp_path)))]
    monkeypatch.setattr("sys.path", list(path))
    with pytest.raises(ConfigError, match="no module named 'nowhere_edge_plugin'"):
        method_class("nowhere_edge_plugin:Method")
    assert sys.path == path


def test_a_plugin_in_the_current_directory_that_raises_is_not_left_on_the_path(tmp_path, monkeypatch):
    (tmp_path / "raising_edge_plugin.py").write_text("raise RuntimeError('plug-in failed at import')\n")
    monkeypatch.chdir(tmp_path)
    path = [p for p in sys.path if p not in ("", str(tmp_path))]
    monkeypatch.setattr("sys.path", list(path))
    monkeypatch.delitem(sys.modules, "raising_edge_plugin", raising=False)
    with pytest.raises(RuntimeError, match="plug-in failed at import"):
        method_class("raising_edge_plugin:Method")
    assert sys.path == path


# ---------------------------------------------------------------- answers that were never extracted


@pytest.mark.parametrize("method", ["majority_vote", "co_rewarding_i", "co_rewarding_ii", "gt"])
def test_unextracted_answers_are_refused_in_the_methods_name(method):
    g = group(["1", "1"], gold="1", teacher=["1"])
    g.answers = []
    with pytest.raises(
        ValueError, match=rf"^{method}: group 'q-original' \(original\) has 2 rollouts but 0 answers"
    ):
        get_reward_method(method).score([g])


@pytest.mark.parametrize("method", ["majority_vote", "co_rewarding_i", "co_rewarding_ii", "gt"])
def test_answers_read_under_another_extraction_are_refused(method):
    g = group(["1", "1"], gold="1", teacher=["1"], fill="boxed")
    with pytest.raises(
        ValueError, match=rf"^{method}: group 'q-original' \(original\) holds answers extracted"
    ):
        get_reward_method(method, extraction="lenient").score([g])


def test_teacher_answers_must_match_the_teacher_rollouts():
    g = group(["1", "1"], teacher=["1", "2"])
    message = (
        r"^co_rewarding_ii: group 'q-original' \(original\) has teacher rollouts whose answers were not "
        r"extracted; call corewarding.rewards.fill_answers \(or score_step\) first$"
    )
    g.teacher_answers = None
    with pytest.raises(ValueError, match=message):
        get_reward_method("co_rewarding_ii").score([g])
    g.teacher_answers = ["1"]
    with pytest.raises(ValueError, match=message):
        get_reward_method("co_rewarding_ii").score([g])
    g.teacher_rollouts = None
    with pytest.raises(ValueError, match=r"the trainer must sample them$"):
        get_reward_method("co_rewarding_ii").score([g])


# ---------------------------------------------------------------- the voting methods pass their options on


def test_exact_vote_reaches_voting_and_matching_in_co_rewarding():
    # exact strings: "5" and "5.0" are different answers
    original = group(["5", "5.0", "5.0"], view="original")
    rephrased = group(["5", "5", "5.0"], view="rephrased")
    loose = get_reward_method("co_rewarding_i").score([original, rephrased])
    exact = get_reward_method("co_rewarding_i", exact_vote=True).score([original, rephrased])
    assert loose.pseudo_labels == ["5", "5"] and loose.rewards == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert exact.pseudo_labels == ["5", "5.0"]
    assert exact.rewards == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert exact.metrics == {
        "pseudo_label/vote_share": pytest.approx(2 / 3),
        "co_rewarding/view_agreement": 0.0,
    }
    assert exact.agreement == [[True, False, False], [False, False, True]]

    g = group(["2", "2.0", None], teacher=["2", "2"])
    loose = get_reward_method("co_rewarding_ii").score([g])
    exact = get_reward_method("co_rewarding_ii", exact_vote=True).score([g])
    assert loose.rewards == [[1.0, 1.0, 0.0]] and exact.rewards == [[1.0, 0.0, 0.0]]
    assert exact.agreement == [[True, False, False]]


def test_co_rewarding_i_names_the_missing_view():
    with pytest.raises(
        DataError,
        match=r"^co_rewarding_i: pair_id 'q' has its rephrased group but no original group; Co-rewarding-I "
        r"needs both views of every question in the same step \(is the rephrased set complete\?\)$",
    ):
        get_reward_method("co_rewarding_i").score([group(["1"], view="rephrased")])


@pytest.mark.parametrize(
    "method", ["majority_vote", "co_rewarding_i", "co_rewarding_ii", "self_certainty", "entropy"]
)
def test_an_empty_step_scores_to_empty_lists_and_zero_metrics(method):
    out = get_reward_method(method).score([])
    assert out.rewards == [] and out.pseudo_labels == []
    assert all(value == 0.0 for value in out.metrics.values())


# ---------------------------------------------------------------- ground truth


def test_gt_grades_every_group_against_its_own_gold():
    groups = [group(["1", "2"], gold="1", pair_id="a"), group(["2", "3", "2"], gold="2", pair_id="b")]
    groups.append(group(["3"], gold="3", pair_id="c"))
    assert get_reward_method("gt").score(groups).rewards == [[1.0, 0.0], [1.0, 0.0, 1.0], [1.0]]


@pytest.mark.parametrize("gold", ["", "   "])
def test_gt_refuses_an_empty_gold(gold):
    with pytest.raises(
        DataError,
        match=r"^method gt: question 'q-original' \(source 'unknown'\) has no gold answer \(field 'gold' is "
        r"empty\); the ground-truth reward needs one for every question$",
    ):
        get_reward_method("gt").score([group(["1"], gold=gold, source="")])


# ---------------------------------------------------------------- token statistics


def test_token_stat_methods_report_their_mean_and_name_themselves():
    stats = [{"entropy": 1.0, "self_certainty": 3.0}, {"entropy": 2.0, "self_certainty": 1.0}]
    g = group(["1", "2"], stats=stats)
    assert get_reward_method("self_certainty").score([g]).metrics == {"token_stats/self_certainty": 2.0}
    assert get_reward_method("entropy").score([g]).metrics == {"token_stats/entropy": 1.5}
    for method in ("entropy", "self_certainty"):
        with pytest.raises(ValueError, match=rf"^{method}: rollout 0 of question 'q-original' \(original\)"):
            get_reward_method(method).score([group(["1"])])


# ---------------------------------------------------------------- score_step


class Fixed(RewardMethod):
    """Hands back whatever it is told to, to test what the pipeline accepts."""

    name = "fixed"
    uses_pseudo_labels = False

    def __init__(self, out: RewardOutput) -> None:
        super().__init__()
        self.out = out

    def score(self, groups):
        return self.out


def test_misaligned_reward_lists_are_caught_even_when_the_labels_are_aligned():
    groups = [group(["1"]), group(["2"], pair_id="r")]
    out = RewardOutput(rewards=[[1.0]], pseudo_labels=[None, None])
    with pytest.raises(
        RuntimeError,
        match=r"^reward method 'fixed' returned 1 reward lists and 2 pseudo-labels for 2 groups$",
    ):
        score_step(Fixed(out), groups)
    out = RewardOutput(rewards=[[float("inf"), math.nan, -math.inf, math.nan]], pseudo_labels=[None])
    with pytest.raises(RuntimeError, match=r"non-finite reward\(s\) \[inf, nan, -inf\] for group 0$"):
        score_step(Fixed(out), [group(["1", "2", "3", "4"])])
    out = RewardOutput(rewards=[[1.0]], pseudo_labels=[None], agreement=[[True, False]])
    with pytest.raises(
        RuntimeError,
        match=r"^reward method 'fixed' returned agreement flags that are not aligned with the rollouts$",
    ):
        score_step(Fixed(out), [group(["1"])])


def test_an_empty_step_has_zero_metrics():
    scores = score_step(get_reward_method("majority_vote"), [])
    assert scores.rewards == [] and scores.metrics["reward/mean"] == 0.0
    assert scores.metrics["reward/zero_std_frac"] == 0.0 and scores.metrics["rollout/answer_frac"] == 0.0


def test_methods_without_labels_report_no_agreement():
    stats = [{"entropy": 1.0}, {"entropy": 2.0}]
    scores = score_step(get_reward_method("entropy"), [group(["1", "2"], gold="1", stats=stats)])
    assert scores.agreement is None
    assert "pseudo_label/agreement" not in scores.metrics


def test_teacher_accuracy_counts_every_group():
    groups = [
        group(["1"], gold="1", teacher=["1", "1"], pair_id="a"),
        group(["2"], gold="2", teacher=["3", "3"], pair_id="b"),
    ]
    metrics = score_step(get_reward_method("co_rewarding_ii"), groups).metrics
    assert metrics["teacher/accuracy"] == 0.5 and metrics["teacher/answer_frac"] == 1.0


def test_score_step_passes_its_timeout_on(monkeypatch):
    seen: list[float] = []
    real = pipeline.match_pairs

    def recording(pairs, exact=False, timeout=2.0):
        seen.append(timeout)
        return real(pairs, exact=exact, timeout=timeout)

    monkeypatch.setattr(pipeline, "match_pairs", recording)
    score_step(get_reward_method("majority_vote"), [group(["1", "2"], gold="1")], timeout=5.5)
    score_step(get_reward_method("majority_vote"), [group(["1", "2"], gold="1")])
    assert seen == [5.5, 2.0]


# ---------------------------------------------------------------- contracts the real helpers never test
def test_safe_extract_treats_any_blank_answer_as_none_and_strips_only_lenient_ones(monkeypatch):
    """The extractor already returns None for ``\\boxed{}``; ``safe_extract`` holds the rule itself, so an
    extractor that returns a blank (a plug-in's, a future one's) still yields no answer."""
    from corewarding.rewards import matching

    monkeypatch.setattr(matching, "extract_answer", lambda text, extraction: text)
    for blank in ("", "   ", "\n\t"):
        assert matching.safe_extract(blank, "lenient") is None
        assert matching.safe_extract(blank, "boxed") is None
    assert matching.safe_extract(" 5 ", "lenient") == "5"
    assert matching.safe_extract(" 5 ", "boxed") == " 5 "  # verbatim, as the paper's code compares them


def test_gt_hands_the_string_grader_the_gold_as_stored_and_math_verify_a_trimmed_one(monkeypatch):
    from corewarding.rewards import ground_truth

    seen: list[tuple[str, list]] = []

    def grade_pairs(pairs, grader):
        seen.append((grader, list(pairs)))
        return [True] * len(pairs)

    monkeypatch.setattr(ground_truth, "grade_pairs", grade_pairs)
    for grader in ("string", "math_verify"):
        method = get_reward_method("gt", gt_grader=grader)
        method.score([group(["5"], gold=" 5\n")])
    assert seen == [("string", [("5", " 5\n")]), ("math_verify", [("5", "5")])]


def test_a_checker_that_loses_verdicts_is_an_error_not_a_misaligned_reward(monkeypatch):
    from corewarding.rewards import matching, voting

    monkeypatch.setattr(matching, "batch_equivalent", lambda pairs, timeout: [True])
    with pytest.raises(RuntimeError, match=r"^batch_equivalent returned 1 verdicts for 2 pairs$"):
        matching.match_pairs([("1", "2"), ("3", "4")])
    monkeypatch.setattr(voting, "batch_vote", lambda groups, exact: [("7", 2)])
    with pytest.raises(RuntimeError, match=r"^batch_vote returned 1 results for 3 groups$"):
        voting.elect_labels([["7"], ["7"], ["8"]])


def test_co_rewarding_i_checks_each_original_label_against_its_rephrased_twins(monkeypatch):
    """One cross-view check per pair, original label first: the equivalence check need not be symmetric
    (math-verify reads its first argument as the gold), so the order is part of the metric."""
    from corewarding.rewards import co_rewarding

    real, seen = co_rewarding.reward_agreement, []

    def recording(*args, extra_pairs=(), **kwargs):
        seen.append(list(extra_pairs))
        return real(*args, extra_pairs=extra_pairs, **kwargs)

    monkeypatch.setattr(co_rewarding, "reward_agreement", recording)
    groups = [
        group(["1", "1"], view="rephrased", pair_id="a"),
        group(["2", "2"], view="original", pair_id="b"),
        group(["3", "3"], view="original", pair_id="a"),
        group(["4", "4"], view="rephrased", pair_id="b"),
    ]
    get_reward_method("co_rewarding_i").score(groups)
    assert seen == [[("2", "4"), ("3", "1")]]
