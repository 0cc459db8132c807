"""A shortened demo and a shortened comparison end to end, through the same code paths as the full ones."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from corewarding.microworld.base_model import PretrainConfig
from corewarding.microworld.compare import comparison_table, run_compare, summarize_run
from corewarding.microworld.demo import run_demo
from corewarding.microworld.experiment import Budget
from corewarding.microworld.world import WorldConfig

SMALL_WORLD = WorldConfig(n_train=64, n_val=16, n_test=16)
SMALL_PRETRAIN = replace(
    PretrainConfig(),
    hidden_size=32,
    num_layers=1,
    intermediate_size=64,
    steps=20,
    batch_size=16,
    n_problems=300,
)
SHORT = Budget(steps=3, questions_per_step=4, group_size=4, val_every=3, val_n=2)


@pytest.mark.slow
def test_short_demo_writes_every_artifact(tmp_path):
    out = tmp_path / "demo"
    results = run_demo(
        out,
        SHORT,
        eval_n=4,
        world_config=SMALL_WORLD,
        pretrain_config=SMALL_PRETRAIN,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for side in ("base", "trained"):
        for key in ("avg@4", "pass@4", "maj@4"):
            assert 0.0 <= on_disk[side][key] <= 1.0
        assert on_disk[side]["pass@4"] >= on_disk[side]["avg@4"]
    assert on_disk["test_questions"] == 16
    assert on_disk["pseudo_label_accuracy"]["final_step"] is not None
    assert (out / "base-model" / "config.json").exists() and (out / "base-model" / "tokenizer.json").exists()
    pngs = {p.stem for p in (out / "plots").glob("*.png")}
    assert {"reward", "pseudo_label_accuracy", "validation_accuracy", "response_length"} <= pngs
    report = (out / "report.md").read_text()
    assert "avg@4" in report and "plots/reward.png" in report
    rows = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all("reward/original" in r and "reward/rephrased" in r for r in rows[1:])


@pytest.mark.slow
def test_short_compare_table_and_figure(tmp_path):
    out = tmp_path / "compare"
    results = run_compare(
        out,
        ["majority_vote", "co_rewarding_ii_frozen"],
        SHORT,
        eval_n=2,
        world_config=SMALL_WORLD,
        pretrain_config=SMALL_PRETRAIN,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert list(results["methods"]) == ["majority_vote", "co_rewarding_ii_frozen"]
    for m in results["methods"].values():
        assert {
            "test_avg@2",
            "test_maj@2",
            "pseudo_label_accuracy_best",
            "reward_final",
            "collapsed",
        } <= m.keys()
        assert m["pseudo_label_accuracy_best"] is not None
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
