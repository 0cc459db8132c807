"""``corewarding compare --reward-mode both``: a shortened comparison under the paper's and the improved reward
rules, through the same code path as the full one, from the shipped base model (see test_demo_and_compare.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from corewarding.config import load_config
from corewarding.data.question import Question
from corewarding.microworld.compare import comparison_table, run_compare
from corewarding.microworld.experiment import REWARD_MODES, Budget, mode_dir, reward_modes
from corewarding.rewards import REGISTRY, RolloutGroup, get_reward_method, score_step
from corewarding.rollout.types import Rollout
from corewarding.training.run_log import read_metrics

# four runs (two methods, two modes): 8 steps of 8 questions, G = 8, at lr 2e-4, enough for the validation
# accuracy of three of them to climb well clear of sampling noise (256 samples); 22 s on an idle 2-core
# machine (the earlier, untrained version: 4 s)
MODES_BUDGET = Budget(steps=8, questions_per_step=8, group_size=8, lr=2e-4, val_every=8, val_n=2)
PAPER_REWARD = {"extraction": "boxed", "exact_vote": True, "gt_grader": "string"}
IMPROVED_REWARD = {"extraction": "lenient", "exact_vote": False, "gt_grader": "math_verify"}
# a group where two rollouts box 6 and three state 7 without a box: the paper's rules hear only the boxes
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UNBOXED = ["\\boxed{6}", "\\boxed{6}", "The answer is 7.", "The answer is 7.", "#### 7"]


def _method_from(config_path):
    """The reward method a saved run was trained with, built as the trainer builds it."""
    return _method(load_config(str(config_path), []))


def _method(cfg):
    accepted = getattr(REGISTRY[cfg.method], "option_defaults", {})
    return get_reward_method(cfg.method, **{k: v for k, v in asdict(cfg.reward).items() if k in accepted})


def _group(texts, gold=None):
    q = Question.from_text(id="q", question="What is x?", gold=gold)
    rollouts = [Rollout(prompt_ids=[1], response_ids=[2], text=t) for t in texts]
    return RolloutGroup(question=q, view="original", pair_id="q", rollouts=rollouts)


def _config(mode: str, method: str = "majority_vote"):
    return load_config(
        None, [f"method={method}", "model.name_or_path=m", "data.train=t", *REWARD_MODES[mode]]
    )


def test_reward_modes_are_the_config_files_rules():
    assert reward_modes("both") == ["improved", "paper"] and reward_modes("paper") == ["paper"]
    assert asdict(_config("paper").reward) == PAPER_REWARD
    assert asdict(_config("improved").reward) == IMPROVED_REWARD
    # the shipped config folders use the same rules
    assert asdict(load_config(str(CONFIGS / "paper" / "majority_vote.yaml"), []).reward) == PAPER_REWARD
    assert asdict(load_config(str(CONFIGS / "improved" / "majority_vote.yaml"), []).reward) == IMPROVED_REWARD
    with pytest.raises(Exception, match="reward mode"):
        reward_modes("strict")


def test_gt_rewards_differ_between_modes_on_unboxed_answers():
    """The gt baseline under each mode's rules: the paper's reads boxes only and grades by strings."""
    gt = {mode: _method(_config(mode, "gt")) for mode in REWARD_MODES}
    assert score_step(gt["improved"], [_group(UNBOXED, gold="7")]).rewards == [[0, 0, 1, 1, 1]]
    assert score_step(gt["paper"], [_group(UNBOXED, gold="7")]).rewards == [[0, 0, 0, 0, 0]]
    # 6.0 equals 6 by math-verify, not by the paper's normalised string match
    assert score_step(gt["improved"], [_group(["\\boxed{6.0}"], gold="6")]).rewards == [[1]]
    assert score_step(gt["paper"], [_group(["\\boxed{6.0}"], gold="6")]).rewards == [[0]]


def _validation(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["val/avg@2"]) for r in read_metrics(run_dir / "metrics.jsonl") if "val/avg@2" in r]


@pytest.mark.slow
def test_short_compare_under_both_reward_modes(tmp_path, shipped_base):
    out = tmp_path / "compare"
    results = run_compare(
        out,
        ["majority_vote", "gt"],
        MODES_BUDGET,
        reward_mode="both",
        eval_n=2,
        test_limit=16,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert results["reward_modes"] == ["improved", "paper"]
    on_disk = json.loads((out / "reward_modes.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert mode_dir(out, "improved") == out and mode_dir(out, "paper") == out / "paper"

    # each mode: its own runs, results.json, report and figure, none overwriting the other's
    for mode, expected in (("improved", IMPROVED_REWARD), ("paper", PAPER_REWARD)):
        where = mode_dir(out, mode)
        per_mode = json.loads((where / "results.json").read_text())
        assert per_mode == results["modes"][mode]
        assert per_mode["reward_mode"] == mode and per_mode["reward"] == expected
        assert list(per_mode["methods"]) == ["majority_vote", "gt"]
        assert per_mode["base"] == results["base"]  # one base model, evaluated once, for both modes
        assert f"Reward mode: {mode}" in (where / "report.md").read_text()
        assert (where / "comparison.png").stat().st_size > 0
        for method in ("majority_vote", "gt"):
            saved = load_config(str(where / method / "config.yaml"), [])
            assert asdict(saved.reward) == expected  # the run really trained under the mode's rules
            assert saved.trainer.output_dir == str(where)
            assert per_mode["methods"][method]["val_final"] is not None
    assert results["modes"]["improved"]["budget"] == results["modes"]["paper"]["budget"]

    # every run trained for real. Validation (128 held-out questions, 2 samples each, answers read by the
    # mode's rules) before and after, measured (seed 0, 2 threads): improved gt 43.8% -> 55.1%, improved
    # majority_vote 43.8% -> 51.6%, paper gt 41.0% -> 53.5%; paper majority_vote (exact-string votes, boxed
    # answers only) stayed at 41%. Both methods of a mode start from the same base, validated alike.
    val = {
        (mode, m): _validation(mode_dir(out, mode) / m)
        for mode in ("improved", "paper")
        for m in ("majority_vote", "gt")
    }
    assert all([step for step, _ in v] == [0, 8] for v in val.values())
    for mode in ("improved", "paper"):
        assert val[(mode, "majority_vote")][0] == val[(mode, "gt")][0]
    for mode, method, gain in (
        ("improved", "gt", 0.06),
        ("paper", "gt", 0.06),
        ("improved", "majority_vote", 0.04),
    ):
        (_, before), (_, after) = val[(mode, method)]
        assert after >= before + gain, (mode, method, before, after)

    # the table and the report put the modes of each method side by side
    table = comparison_table(results)
    rows = [line.split()[:2] for line in table.splitlines() if line.split()[0] in ("majority_vote", "gt")]
    assert rows == [[m, mode] for m in ("majority_vote", "gt") for mode in ("improved", "paper")]
    assert "base model" in table and "reward mode" in table
    report = (out / "reward_modes.md").read_text()
    assert "| reward mode |" in report and "paper/comparison.png" in report

    # where a rollout answers without a box the two runs' rewards differ, as their configs say they must
    paper_gt = score_step(_method_from(out / "paper" / "gt" / "config.yaml"), [_group(UNBOXED, gold="7")])
    assert paper_gt.rewards == [[0, 0, 0, 0, 0]]  # the improved gt run pays the three unboxed 7s
    assert score_step(_method_from(out / "gt" / "config.yaml"), [_group(UNBOXED, gold="7")]).rewards == [
        [0, 0, 1, 1, 1]
    ]
    improved_mv = _method_from(out / "majority_vote" / "config.yaml")
    paper_mv = _method_from(out / "paper" / "majority_vote" / "config.yaml")
    improved = score_step(improved_mv, [_group(UNBOXED, gold="7")])
    paper = score_step(paper_mv, [_group(UNBOXED, gold="7")])
    assert improved.pseudo_labels == ["7"] and improved.rewards == [[0, 0, 1, 1, 1]]
    assert paper.pseudo_labels == ["6"] and paper.rewards == [[1, 1, 0, 0, 0]]
    # and where every rollout boxes an integer, as the micro-world's do, the modes agree
    boxed = ["\\boxed{6}", "\\boxed{6}", "\\boxed{7}", "\\boxed{6}", "\\boxed{9}"]
    assert score_step(improved_mv, [_group(boxed)]).rewards == score_step(paper_mv, [_group(boxed)]).rewards
