"""Training-curve figures from real metrics.jsonl files."""

import json

import matplotlib.image as mpimg
import pytest

from corewarding.reporting.plots import plot_comparison, plot_run, rolling_mean


def test_rolling_mean_is_trailing_and_same_length():
    assert rolling_mean([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
    assert rolling_mean([2.0, 4.0], window=10) == [2.0, 3.0]
    assert rolling_mean([]) == []


def _write_run(path, rewards, with_pseudo_labels=True, val_every=25):
    path.mkdir(parents=True)
    rows = [{"step": 0, "val/avg@4": 0.5}]
    for step, reward in enumerate(rewards, start=1):
        row = {"step": step, "reward/mean": reward, "response_length/mean": 30.0 + step % 7}
        if with_pseudo_labels:
            row["pseudo_label/accuracy"] = 0.8 + 0.01 * (step % 5)
        if step % val_every == 0:
            row["val/avg@4"] = 0.5 + 0.001 * step
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("steps", [5, 100])
def test_comparison_figure_mixes_reward_scales_and_missing_curves(tmp_path, steps):
    # a 0/1 reward, a self-certainty-scale reward (~9 nats) and an entropy-scale one; gt has no pseudo-labels
    runs = {
        "gt": _write_run(tmp_path / "gt", [0.5 + 0.002 * s for s in range(steps)], with_pseudo_labels=False),
        "self_certainty": _write_run(tmp_path / "sc", [9.0 - 0.001 * s for s in range(steps)], False),
        "majority_vote": _write_run(tmp_path / "mv", [0.6] * steps),
    }
    out = plot_comparison(runs, tmp_path / "fig" / "comparison.png")
    image = mpimg.imread(out)
    # four panels of 4.2 in plus 1.6 in for the legend, 3.6 in tall, at 110 dpi
    assert image.shape[:2] == (round(3.6 * 110), round((4 * 4.2 + 1.6) * 110))


def test_plot_run_writes_one_png_per_curve_with_data(tmp_path):
    run = _write_run(tmp_path / "run", [0.1 * (s % 10) for s in range(40)])
    names = sorted(p.name for p in plot_run(run))
    # the run logged no KL or token entropy, so that curve is skipped rather than drawn empty
    assert names == [
        "pseudo_label_accuracy.png",
        "response_length.png",
        "reward.png",
        "validation_accuracy.png",
    ]
    assert all((run / "plots" / n).stat().st_size > 0 for n in names)
