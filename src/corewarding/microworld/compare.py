"""``corewarding compare``: every method and both ablations on the micro-world, same budget and seed.

Writes one table (final test avg@n and maj@n, best and final pseudo-label accuracy, final mean reward, mean
response length, and a collapse flag) and one figure with a line per method for each curve. Overrides
(steps, learning rate, KL coefficient, group size) move the methods into harsher regimes, e.g. the one where
self-rewarding collapses onto a consistent wrong answer.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

COLLAPSE_DROP = 0.10  # validation accuracy this far below its best ...
TREND_WINDOW = 0.2  # ... while mean reward over the last 20% of steps beats its 20% up to that best


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from corewarding.microworld.experiment import VARIANTS, add_experiment_arguments

    add_experiment_arguments(parser, default_out="runs/compare")
    parser.add_argument(
        "--methods", default=",".join(VARIANTS), help=f"comma list from: {', '.join(VARIANTS)}"
    )


def run(args: argparse.Namespace) -> int:
    from corewarding.errors import ConfigError
    from corewarding.microworld.experiment import VARIANTS, budget_from_args, run_options

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in VARIANTS]
    if unknown or not methods:
        raise ConfigError(f"--methods {args.methods!r}: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    results = run_compare(Path(args.out), methods, budget_from_args(args), **run_options(args))
    print()
    print(comparison_table(results))
    print(f"\nwrote {args.out}/results.json, report.md and comparison.png")
    return 0


def _reward_rose_since(rewards: list[tuple[int, float]], best_step: int) -> bool:
    """Whether mean reward kept rising after validation peaked at ``best_step``.

    Self-rewarding collapse is the reward climbing while accuracy falls: compare the mean reward over the last
    20% of steps with the mean over the 20% of steps up to the best-validation step (the first 20% when the
    best was before any training). Reading "still rising" as the last 20% against the 20% before would miss
    a collapse whose reward has already plateaued on the wrong answer.
    """
    w = max(1, int(len(rewards) * TREND_WINDOW))
    if len(rewards) < 2 * w:
        return False
    upto = [r for s, r in rewards if s <= best_step][-w:]
    then = upto if len(upto) == w else [r for _, r in rewards[:w]]
    now = [r for _, r in rewards[-w:]]
    return sum(now) / w > sum(then) / w


def summarize_run(rows: list[dict[str, Any]], val_key: str, uses_labels: bool) -> dict[str, Any]:
    """Training-curve summary of one run (from its metrics.jsonl rows)."""
    steps = [r for r in rows if "reward/mean" in r]
    pl = [r["pseudo_label/accuracy"] for r in steps if "pseudo_label/accuracy" in r]
    rewards = [(r.get("step", i), r["reward/mean"]) for i, r in enumerate(steps)]
    val_rows = [(r.get("step", 0), r[val_key]) for r in rows if val_key in r]
    val = [v for _, v in val_rows]
    tail = steps[-10:]
    # max() keeps the first of equal values: the step at which validation first reached its best
    best_step, best_val = max(val_rows, key=lambda sv: sv[1]) if val_rows else (0, None)
    collapsed = bool(val and best_val - val[-1] > COLLAPSE_DROP and _reward_rose_since(rewards, best_step))
    return {
        "pseudo_label_accuracy_best": max(pl) if pl and uses_labels else None,
        "pseudo_label_accuracy_final": pl[-1] if pl and uses_labels else None,
        "reward_final": rewards[-1][1] if rewards else None,
        "response_length_mean": sum(r["response_length/mean"] for r in tail) / len(tail) if tail else None,
        "val_best": best_val,
        "val_final": val[-1] if val else None,
        "collapsed": collapsed,
    }


def run_compare(
    out: Path,
    methods: list[str],
    budget: Any,
    *,
    eval_n: int = 8,
    pretrain_seed: int = 0,
    world_config: Any = None,
    pretrain_config: Any = None,
    cache_dir: Path | None = None,
    use_shipped_base: bool = True,
    test_limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from corewarding.microworld.experiment import (
        evaluate_model,
        evaluation_settings,
        final_checkpoint,
        fresh_dir,
        prepare,
        test_questions,
        train_config,
    )
    from corewarding.reporting.plots import plot_comparison
    from corewarding.reporting.tables import write_json
    from corewarding.rewards import REGISTRY
    from corewarding.training.run_log import read_metrics
    from corewarding.training.trainer import Trainer

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    setup = prepare(
        out,
        world_config=world_config,
        pretrain_seed=pretrain_seed,
        pretrain_config=pretrain_config,
        cache_dir=cache_dir,
        use_shipped_base=use_shipped_base,
        progress=progress,
    )
    test = test_questions(setup)[:test_limit]
    val_key = f"val/avg@{budget.val_n}"
    kwargs = evaluation_settings(budget, eval_n, progress)
    base = evaluate_model(setup.base_model, test, desc="evaluating base model", **kwargs)
    per_method: dict[str, Any] = {}
    runs: dict[str, Path] = {}
    for variant in methods:
        t0 = time.perf_counter()
        run_dir = fresh_dir(out / variant)
        cfg = train_config(setup, variant, budget, out, variant)
        Trainer(cfg, progress=progress).train()
        metrics = evaluate_model(final_checkpoint(run_dir), test, desc=f"evaluating {variant}", **kwargs)
        per_method[variant] = {
            f"test_avg@{eval_n}": metrics[f"avg@{eval_n}"],
            f"test_maj@{eval_n}": metrics[f"maj@{eval_n}"],
            **summarize_run(
                read_metrics(run_dir / "metrics.jsonl"),
                val_key,
                uses_labels=REGISTRY[cfg.method].uses_pseudo_labels,
            ),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        runs[variant] = run_dir
    results = {
        "base": {f"test_avg@{eval_n}": base[f"avg@{eval_n}"], f"test_maj@{eval_n}": base[f"maj@{eval_n}"]},
        "methods": per_method,
        "budget": asdict(budget),
        "eval": {"n": eval_n, "temperature": budget.temperature, "test_questions": len(test)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "results.json", results)
    plot_comparison(runs, out / "comparison.png")
    _write_report(out / "report.md", results)
    return results


COLUMNS = (
    "test_avg@{n}",
    "test_maj@{n}",
    "pseudo_label_accuracy_best",
    "pseudo_label_accuracy_final",
    "reward_final",
    "response_length_mean",
    "val_best",
    "val_final",
    "collapsed",
)


def comparison_table(results: dict[str, Any], markdown: bool = False) -> str:
    from corewarding.reporting.tables import console_table, markdown_table

    n = results["eval"]["n"]
    cols = [c.format(n=n) for c in COLUMNS]
    rows = [["base model", *(results["base"].get(c) for c in cols)]]
    rows += [[name, *(m.get(c) for c in cols)] for name, m in results["methods"].items()]
    headers = ["method", *(c.replace("pseudo_label_accuracy", "PL acc").replace("_", " ") for c in cols)]
    return (markdown_table if markdown else console_table)(headers, rows)


def _write_report(path: Path, results: dict[str, Any]) -> None:
    from corewarding.reporting.tables import write_atomic

    b = results["budget"]
    text = "\n".join(
        [
            "# Methods compared on the micro-world",
            "",
            f"Same budget for every method: {b['steps']} steps, {b['questions_per_step']} questions a step "
            f"(Co-rewarding-I trains both views of each), G = {b['group_size']}, lr {b['lr']}, KL {b['kl_coef']}, "
            f"seed {b['seed']}. Test: {results['eval']['test_questions']} held-out questions, "
            f"{results['eval']['n']} samples each at temperature {results['eval']['temperature']}. "
            f"`collapsed`: final validation accuracy more than {COLLAPSE_DROP * 100:.0f} points below its best "
            f"while mean reward kept rising (last {TREND_WINDOW:.0%} of steps above the {TREND_WINDOW:.0%} up to the best). "
            f"val best / final: validation avg@{b['val_n']} over training (step 0 is the base model). "
            "PL acc: pseudo-label accuracy against the ground truth the reward never saw.",
            "",
            comparison_table(results, markdown=True),
            "",
            "![curves](comparison.png)",
            "",
        ]
    )
    write_atomic(path, text)
