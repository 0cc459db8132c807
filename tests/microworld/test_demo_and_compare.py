"""A shortened demo and a shortened comparison end to end, through the same code paths as the full ones.

They start from the shipped base model on its own world, as ``make demo`` does: a model pretrained for real
(held-out avg@8 46%, maj@8 74%), so even a short run has something to learn and the tests can check that it
did. The budget, 12 steps of 8 questions with G = 8 at lr 1.5e-4, is the shortest that learned clearly with
these seeds (8 steps at 2e-4 gained 5 points; 4 questions a step, G = 4, or lr 5e-4 and above made the model
worse). Runs are deterministic on a given machine, so the margins below hold run after run; they are set at
about half of what was measured, to leave room for another machine's float rounding. Cost on an idle 2-core
machine: 16 s for the demo, 18 s for the comparison (the earlier, untrained versions: 6 s and 2 s).
"""

from __future__ import annotations

import json

import pytest

from corewarding.microworld.compare import comparison_table, run_compare, summarize_run
from corewarding.microworld.demo import run_demo
from corewarding.microworld.experiment import Budget

LEARN = Budget(steps=12, questions_per_step=8, group_size=8, lr=1.5e-4, val_every=12, val_n=2)
TEST_LIMIT = 64  # held-out questions, each sampled eval_n times


@pytest.mark.slow
def test_short_demo_learns_and_writes_every_artifact(tmp_path, shipped_base):
    out = tmp_path / "demo"
    results = run_demo(
        out, LEARN, eval_n=4, test_limit=TEST_LIMIT, cache_dir=tmp_path / "cache", progress=False
    )
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["base_model_origin"]["source"] == "shipped with the package"
    for side in ("base", "trained"):
        for key in ("avg@4", "pass@4", "maj@4"):
            assert 0.0 <= on_disk[side][key] <= 1.0
        assert on_disk[side]["pass@4"] >= on_disk[side]["avg@4"]
    assert on_disk["test_questions"] == TEST_LIMIT

    # it learned, without a label: measured (seed 0, 2 threads) avg@4 43.4% -> 52.7%, maj@4 57.8% -> 65.6%,
    # samples with no answer 9.8% -> 2.3%, with 85% of the step's pseudo-labels right
    base, trained = on_disk["base"], on_disk["trained"]
    assert trained["avg@4"] >= base["avg@4"] + 0.05, (base, trained)
    assert trained["maj@4"] >= base["maj@4"] + 0.03, (base, trained)
    assert trained["no_answer_frac"] <= base["no_answer_frac"] / 2, (base, trained)
    assert on_disk["pseudo_label_accuracy"]["last_10_steps_mean"] >= 0.7

    assert (out / "base-model" / "config.json").exists() and (out / "base-model" / "tokenizer.json").exists()
    pngs = {p.stem for p in (out / "plots").glob("*.png")}
    assert {"reward", "pseudo_label_accuracy", "validation_accuracy", "response_length"} <= pngs
    report = (out / "report.md").read_text()
    assert "avg@4" in report and "plots/reward.png" in report
    rows = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(13))
    assert all("reward/original" in r and "reward/rephrased" in r for r in rows[1:])
    # validation before and after training tells the same story on the validation split
    val = [r for r in rows if "val/avg@2" in r]
    assert [r["step"] for r in val] == [0, 12]
    assert val[1]["val/no_answer_frac"] < val[0]["val/no_answer_frac"]


@pytest.mark.slow
def test_short_compare_table_and_figure(tmp_path, shipped_base):
    out = tmp_path / "compare"
    results = run_compare(
        out,
        ["majority_vote", "co_rewarding_ii_frozen"],
        LEARN,
        eval_n=4,
        test_limit=TEST_LIMIT,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert list(results["methods"]) == ["majority_vote", "co_rewarding_ii_frozen"]
    for m in results["methods"].values():
        assert {
            "test_avg@4",
            "test_maj@4",
            "pseudo_label_accuracy_best",
            "reward_final",
            "collapsed",
        } <= m.keys()
        assert m["pseudo_label_accuracy_best"] is not None
    # both learned from their pseudo-labels (the policy's own votes; a frozen teacher's votes): measured
    # (seed 0, 2 threads) test avg@4 43.4% -> 51.2% and 48.8%, validation avg@2 43.8% -> 55.5% and 51.2%
    base = results["base"]["test_avg@4"]
    for name, m in results["methods"].items():
        assert m["test_avg@4"] >= base + 0.03, (name, base, m)
        assert m["collapsed"] is False, name
    assert (out / "comparison.png").stat().st_size > 0
    table = comparison_table(results)
    assert "majority_vote" in table and "co_rewarding_ii_frozen" in table and "base model" in table
    assert "val best" in table and "val final" in table and "collapsed" in table
    assert "| method |" in (out / "report.md").read_text()


def _rows(rewards, vals, every=2):
    rows = []
    for i, r in enumerate(rewards, start=1):
        row = {"step": i, "reward/mean": r, "response_length/mean": 10.0, "pseudo_label/accuracy": 0.5}
        if i % every == 0:
            row["val/avg@4"] = vals[i // every - 1]
        rows.append(row)
    return rows


def test_collapse_flag_needs_falling_validation_and_rising_reward():
    rising = [0.1 * i for i in range(10)]
    falling_val = [0.5, 0.6, 0.55, 0.45, 0.40]
    assert summarize_run(_rows(rising, falling_val), "val/avg@4", uses_labels=True)["collapsed"] is True
    # same validation drop, but the reward stopped rising: not the self-rewarding collapse signature
    flat = [0.5] * 10
    assert summarize_run(_rows(flat, falling_val), "val/avg@4", uses_labels=True)["collapsed"] is False
    # the reward climbed and then plateaued on the wrong answer while validation fell: still the collapse
    # (majority voting at lr 5e-4 without KL: reward 0.62 -> 0.79 and flat, validation 0.52 -> 0.07)
    plateau = [0.1, 0.2, 0.3, 0.4, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9]
    assert summarize_run(_rows(plateau, falling_val), "val/avg@4", uses_labels=True)["collapsed"] is True
    # validation fell but so did the reward since its best: the policy got worse without being paid for it
    falling = [0.9, 0.9, 0.8, 0.8, 0.7, 0.6, 0.6, 0.5, 0.5, 0.4]
    assert summarize_run(_rows(falling, falling_val), "val/avg@4", uses_labels=True)["collapsed"] is False
    # reward rising, validation within 10 points of its best
    assert summarize_run(_rows(rising, [0.5, 0.6, 0.58, 0.55, 0.52]), "val/avg@4", True)["collapsed"] is False
    s = summarize_run(_rows(rising, falling_val), "val/avg@4", uses_labels=False)
    assert s["pseudo_label_accuracy_best"] is None and s["val_best"] == 0.6 and s["val_final"] == 0.40
