"""``corewarding compare``: every method and both ablations on the micro-world, same budget and seed.

Writes one table (final test avg@n and maj@n, best and final pseudo-label accuracy, final mean reward, mean
response length, and a collapse flag) and one figure with a line per method for each curve. Overrides
(steps, learning rate, KL coefficient, group size) move the methods into harsher regimes, e.g. the one where
self-rewarding collapses onto a consistent wrong answer.

``--reward-mode`` picks the reward rules (``experiment.REWARD_MODES``): ``improved`` (the default, the
project's rules), ``paper`` (the paper's released code: last ``\\boxed{}`` only, exact-string voting, string
grading) or ``both``, the same comparison (methods, budget, seeds, base model, test questions) under each.
Each mode keeps its own runs and files (``experiment.mode_dir``: ``out`` for improved, ``out/paper`` for
paper); ``both`` adds ``reward_modes.json`` and ``reward_modes.md`` with the modes side by side.
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
    from corewarding.microworld.experiment import (
        BOTH_MODES,
        DEFAULT_REWARD_MODE,
        REWARD_MODES,
        VARIANTS,
        add_experiment_arguments,
    )

    add_experiment_arguments(parser, default_out="runs/compare")
    parser.add_argument(
        "--methods",
        default=",".join(VARIANTS),
        help=f"comma list from: {', '.join(VARIANTS)}; or any reward method's registered name or a plug-in's "
        "import path package.module:ClassName",
    )
    parser.add_argument(
        "--reward-mode",
        choices=[*REWARD_MODES, BOTH_MODES],
        default=DEFAULT_REWARD_MODE,
        help="reward rules: improved (the project's: lenient extraction, equivalence voting, math-verify), "
        "paper (the paper's released code: last \\boxed{} only, exact-string voting, string grading), or "
        f"both side by side (default {DEFAULT_REWARD_MODE}; paper runs go under OUT/paper)",
    )


def run(args: argparse.Namespace) -> int:
    from corewarding.errors import ConfigError
    from corewarding.microworld.experiment import (
        VARIANTS,
        budget_from_args,
        is_variant,
        mode_dir,
        reward_modes,
        run_options,
    )

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if not is_variant(m)]
    if unknown or not methods:
        raise ConfigError(
            f"--methods {args.methods!r}: unknown {unknown}; choose from {', '.join(VARIANTS)}, or a reward "
            "method's registered name or import path package.module:ClassName"
        )
    out = Path(args.out)
    results = run_compare(
        out, methods, budget_from_args(args), reward_mode=args.reward_mode, **run_options(args)
    )
    print()
    print(comparison_table(results))
    written = [
        f"{mode_dir(out, mode)}/results.json, report.md and comparison.png"
        for mode in reward_modes(args.reward_mode)
    ]
    if "modes" in results:
        written.append(f"{out}/reward_modes.json and reward_modes.md")
    print("\nwrote " + "; ".join(written))
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
    reward_mode: str = "improved",
    eval_n: int = 8,
    pretrain_seed: int = 0,
    world_config: Any = None,
    pretrain_config: Any = None,
    cache_dir: Path | None = None,
    use_shipped_base: bool = True,
    test_limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate every method under ``reward_mode`` (a name in ``REWARD_MODES``, or ``both``).

    Returns what one mode writes to its ``results.json``; for ``both``, what goes to
    ``reward_modes.json``: ``{"reward_modes", "base", "modes": {mode: that mode's results}, ...}``. The world,
    base model, test questions and the base model's evaluation are shared by the modes. Test metrics score
    every model by one rule (``corewarding eval``'s: lenient extraction, equivalence), so the modes are
    compared on the same ruler; validation during training reads answers by each mode's own rules.
    """
    from corewarding.files import atomic_write_json
    from corewarding.microworld.experiment import (
        REWARD_MODES,
        check_before_work,
        evaluate_model,
        evaluation_settings,
        mode_dir,
        prepare,
        reward_modes,
        test_questions,
    )

    started = time.perf_counter()
    modes = reward_modes(reward_mode)
    runs = [(variant, REWARD_MODES[mode]) for mode in modes for variant in methods]
    check_before_work(out, budget, runs, cache_dir=cache_dir)
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
    kwargs = evaluation_settings(budget, eval_n, progress)
    base = evaluate_model(setup.base_model, test, desc="evaluating base model", **kwargs)
    base_row = {f"test_avg@{eval_n}": base[f"avg@{eval_n}"], f"test_maj@{eval_n}": base[f"maj@{eval_n}"]}
    per_mode: dict[str, dict[str, Any]] = {}
    for mode in modes:
        per_mode[mode] = _run_mode(
            mode_dir(out, mode),
            mode,
            setup,
            methods,
            budget,
            test,
            base_row,
            kwargs,
            progress,
            # a lone mode's seconds count the setup and the base model's evaluation, as before modes existed
            started=started if len(modes) == 1 else None,
        )
    if len(modes) == 1:
        return per_mode[modes[0]]
    first = per_mode[modes[0]]
    combined = {
        "reward_modes": modes,
        "base": base_row,
        "base_model": str(setup.base_model),
        "modes": per_mode,
        "budget": first["budget"],
        "eval": first["eval"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "reward_modes.json", combined)
    _write_modes_report(out, combined)
    return combined


def _run_mode(
    out: Path,
    mode: str,
    setup: Any,
    methods: list[str],
    budget: Any,
    test: list,
    base_row: dict[str, Any],
    eval_kwargs: dict[str, Any],
    progress: bool,
    started: float | None = None,
) -> dict[str, Any]:
    """Every method under one reward mode: runs in ``out/<method>``, then ``out``'s results.json, report
    and figure; returns the results (``seconds`` since ``started``, by default since this call)."""
    from corewarding.files import atomic_write_json
    from corewarding.microworld.experiment import (
        REWARD_MODES,
        evaluate_model,
        final_checkpoint,
        fresh_dir,
        train_config,
        variant_dir_name,
    )
    from corewarding.reporting.plots import plot_comparison
    from corewarding.rewards import method_class
    from corewarding.training.run_log import read_metrics
    from corewarding.training.trainer import Trainer

    started = time.perf_counter() if started is None else started
    out.mkdir(parents=True, exist_ok=True)
    eval_n = eval_kwargs["n"]
    val_key = f"val/avg@{budget.val_n}"
    per_method: dict[str, Any] = {}
    runs: dict[str, Path] = {}
    reward: dict[str, Any] = {}
    for variant in methods:
        t0 = time.perf_counter()
        run_dir = fresh_dir(out / variant_dir_name(variant))
        cfg = train_config(setup, variant, budget, out, variant_dir_name(variant), extra=REWARD_MODES[mode])
        reward = asdict(cfg.reward)
        Trainer(cfg, progress=progress).train()
        metrics = evaluate_model(
            final_checkpoint(run_dir), test, desc=f"evaluating {variant} ({mode})", **eval_kwargs
        )
        per_method[variant] = {
            f"test_avg@{eval_n}": metrics[f"avg@{eval_n}"],
            f"test_maj@{eval_n}": metrics[f"maj@{eval_n}"],
            **summarize_run(
                read_metrics(run_dir / "metrics.jsonl"),
                val_key,
                uses_labels=method_class(cfg.method).uses_pseudo_labels,
            ),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        runs[variant] = run_dir
    results = {
        "reward_mode": mode,
        "reward": reward,
        "base": dict(base_row),
        "methods": per_method,
        "budget": asdict(budget),
        "eval": {"n": eval_n, "temperature": budget.temperature, "test_questions": len(test)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "results.json", results)
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
    """One row per method (and the base model); with several reward modes (``run_compare``'s ``both``
    results), one row per method and mode, the modes of a method next to each other."""
    from corewarding.reporting.tables import console_table, markdown_table

    n = results["eval"]["n"]
    cols = [c.format(n=n) for c in COLUMNS]
    headers = ["method", *(c.replace("pseudo_label_accuracy", "PL acc").replace("_", " ") for c in cols)]
    if "modes" not in results:
        rows = [["base model", *(results["base"].get(c) for c in cols)]]
        rows += [[name, *(m.get(c) for c in cols)] for name, m in results["methods"].items()]
        return (markdown_table if markdown else console_table)(headers, rows)
    modes = results["reward_modes"]
    rows = [["base model", "all", *(results["base"].get(c) for c in cols)]]  # one base for every mode
    methods = list(results["modes"][modes[0]]["methods"])
    for name in methods:
        for mode in modes:
            m = results["modes"][mode]["methods"].get(name, {})
            rows.append([name, mode, *(m.get(c) for c in cols)])
    headers.insert(1, "reward mode")
    return (markdown_table if markdown else console_table)(headers, rows)


def _write_report(path: Path, results: dict[str, Any]) -> None:
    from corewarding.files import atomic_write_text

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
            _mode_line(results),
            "",
            comparison_table(results, markdown=True),
            "",
            "![curves](comparison.png)",
            "",
        ]
    )
    atomic_write_text(path, text)


def _mode_line(results: dict[str, Any]) -> str:
    mode = results.get("reward_mode", "improved")
    options = " ".join(f"reward.{k}={str(v).lower()}" for k, v in results.get("reward", {}).items())
    return f"Reward mode: {mode} ({options})." if options else f"Reward mode: {mode}."


def _write_modes_report(out: Path, combined: dict[str, Any]) -> None:
    """``reward_modes.md``: the modes side by side, and where each mode's own report and figure are."""
    from corewarding.files import atomic_write_text
    from corewarding.microworld.experiment import REWARD_MODES, mode_dir

    modes = combined["reward_modes"]
    b = combined["budget"]
    lines = [
        "# Reward modes compared on the micro-world",
        "",
        f"The same methods, budget ({b['steps']} steps, {b['questions_per_step']} questions a step, "
        f"G = {b['group_size']}, lr {b['lr']}, KL {b['kl_coef']}, seed {b['seed']}), base model and "
        f"{combined['eval']['test_questions']} test questions under each reward mode:",
        "",
    ]
    for mode in modes:
        where = mode_dir(out, mode).relative_to(out).as_posix()
        folder = "this folder" if where == "." else f"`{where}/`"
        lines.append(f"- **{mode}**: `{' '.join(REWARD_MODES[mode])}`; runs, report and figure in {folder}")
    lines += [
        "",
        f"Test avg@{combined['eval']['n']} and maj@{combined['eval']['n']} score every model by the same rule "
        "(lenient extraction, equivalence), so the modes are compared on one ruler; val best / final are "
        "training-time validation, read by each mode's own rules (paper: a completion without "
        "`\\boxed{}` has no answer).",
        "",
        comparison_table(combined, markdown=True),
        "",
    ]
    for mode in modes:
        png = (mode_dir(out, mode) / "comparison.png").relative_to(out).as_posix()
        lines += [f"![{mode}]({png})", ""]
    atomic_write_text(out / "reward_modes.md", "\n".join(lines))
