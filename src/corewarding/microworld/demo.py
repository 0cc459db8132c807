"""``corewarding demo``: Co-rewarding-I improves a real model without labels, on a CPU, in minutes.

Pretrains (or reuses) the micro-world base model, evaluates it on the held-out test set, trains it with
Co-rewarding-I (no ground truth enters the reward), evaluates again, and writes ``runs/demo/``:
``results.json``, ``report.md``, curves under ``plots/`` and the base model as ``base-model/``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

METRICS = ("avg@{n}", "pass@{n}", "maj@{n}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from corewarding.microworld.experiment import add_experiment_arguments

    add_experiment_arguments(parser, default_out="runs/demo")


def run(args: argparse.Namespace) -> int:
    from corewarding.microworld.experiment import budget_from_args, run_options

    results = run_demo(Path(args.out), budget_from_args(args), **run_options(args))
    print()
    print(summary_table(results))
    print(
        f"\nwrote {args.out}/results.json, report.md, plots/ and base-model/ "
        f"in {results['seconds']['total']:.0f} s"
    )
    return 0


def _pick(metrics: dict[str, float], n: int) -> dict[str, float]:
    keys = [k.format(n=n) for k in METRICS] + ["no_answer_frac", "mean_response_tokens"]
    return {k: metrics[k] for k in keys if k in metrics}


def run_demo(
    out: Path,
    budget: Any = None,
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
    """The whole demo; returns what it writes to ``results.json``."""
    from corewarding.files import atomic_write_json
    from corewarding.microworld.experiment import (
        Budget,
        check_before_work,
        evaluate_model,
        evaluation_settings,
        final_checkpoint,
        fresh_dir,
        prepare,
        test_questions,
        train_config,
    )
    from corewarding.reporting.plots import plot_run
    from corewarding.training.run_log import read_metrics
    from corewarding.training.trainer import Trainer

    budget = budget or Budget()
    started = time.perf_counter()
    check_before_work(out, budget, [("co_rewarding_i", [])], cache_dir=cache_dir)
    setup = prepare(
        out,
        world_config=world_config,
        pretrain_seed=pretrain_seed,
        pretrain_config=pretrain_config,
        cache_dir=cache_dir,
        use_shipped_base=use_shipped_base,
        progress=progress,
    )
    base_copy = out / "base-model"
    if base_copy.exists():
        shutil.rmtree(base_copy)
    shutil.copytree(setup.base_model, base_copy)
    t_setup = time.perf_counter() - started

    test = test_questions(setup)[:test_limit]
    evaluate_kwargs = evaluation_settings(budget, eval_n, progress)
    t0 = time.perf_counter()
    base_metrics = evaluate_model(base_copy, test, desc="evaluating base model", **evaluate_kwargs)
    t_eval_base = time.perf_counter() - t0

    train_dir = fresh_dir(out / "train")
    cfg = train_config(setup, "co_rewarding_i", budget, out, "train")
    t0 = time.perf_counter()
    Trainer(cfg, progress=progress).train()
    t_train = time.perf_counter() - t0
    trained_dir = final_checkpoint(train_dir)

    t0 = time.perf_counter()
    trained_metrics = evaluate_model(trained_dir, test, desc="evaluating trained model", **evaluate_kwargs)
    t_eval_trained = time.perf_counter() - t0

    rows = [r for r in read_metrics(train_dir / "metrics.jsonl") if "pseudo_label/accuracy" in r]
    last = rows[-10:]
    results: dict[str, Any] = {
        "base": _pick(base_metrics, eval_n),
        "trained": _pick(trained_metrics, eval_n),
        "pseudo_label_accuracy": {
            "first_step": rows[0]["pseudo_label/accuracy"] if rows else None,
            "final_step": rows[-1]["pseudo_label/accuracy"] if rows else None,
            "last_10_steps_mean": sum(r["pseudo_label/accuracy"] for r in last) / len(last) if last else None,
        },
        "method": "co_rewarding_i",
        "test_questions": len(test),
        "eval": {"n": eval_n, "temperature": budget.temperature, "max_new_tokens": budget.max_new_tokens},
        "budget": asdict(budget),
        "base_model": str(base_copy),
        "base_model_origin": _base_origin(setup.base_model),
        "trained_model": str(trained_dir),
        "seconds": {
            "setup_and_pretraining": round(t_setup, 1),
            "eval_base": round(t_eval_base, 1),
            "training": round(t_train, 1),
            "eval_trained": round(t_eval_trained, 1),
            "total": round(time.perf_counter() - started, 1),
        },
    }
    atomic_write_json(out / "results.json", results)
    plots = plot_run(train_dir, out_dir=out / "plots")
    write_report(out / "report.md", results, [p.relative_to(out) for p in plots])
    return results


def _base_origin(base_dir: Path) -> dict[str, Any]:
    """Where the base model came from (the shipped copy, or pretrained on this or an earlier run) and
    what its pretraining took on the machine that ran it."""
    import json

    from corewarding.microworld.base_model import LOG_FILE, SHIPPED_DIR

    log = json.loads((base_dir / LOG_FILE).read_text())
    return {
        "source": "shipped with the package" if base_dir == SHIPPED_DIR else f"pretrained into {base_dir}",
        "fingerprint": log.get("fingerprint"),
        "pretraining_seconds": log.get("seconds"),
        "pretrained_on": log.get("machine"),
    }


def _origin_line(origin: dict[str, Any] | None) -> str:
    if not origin:
        return ""
    machine = origin.get("pretrained_on") or {}
    where = f" on {machine.get('processor')}, {machine.get('cpus')} CPUs" if machine else ""
    return (
        f"Base model: {origin['source']} (fingerprint {origin['fingerprint']}; its pretraining took "
        f"{origin['pretraining_seconds']} s{where}; `corewarding build-base` rebuilds the shipped one, "
        "`corewarding demo --pretrain-base` pretrains here)."
    )


def summary_table(results: dict[str, Any], markdown: bool = False) -> str:
    from corewarding.reporting.tables import console_table, markdown_table

    n = results["eval"]["n"]
    rows = []
    for key in (k.format(n=n) for k in METRICS):
        b, t = results["base"].get(key), results["trained"].get(key)
        rows.append([key, b, t, None if b is None or t is None else t - b])
    rows.append(
        [
            "no boxed answer",
            results["base"].get("no_answer_frac"),
            results["trained"].get("no_answer_frac"),
            None,
        ]
    )
    headers = ["held-out test", "base", "trained (Co-rewarding-I)", "change"]
    table = markdown_table(headers, rows) if markdown else console_table(headers, rows)
    pl = results["pseudo_label_accuracy"]
    tail = (
        f"pseudo-label accuracy (vs the ground truth the reward never saw): first step {pl['first_step']:.3f}, "
        f"final step {pl['final_step']:.3f}, mean of the last 10 steps {pl['last_10_steps_mean']:.3f}"
        if pl["final_step"] is not None
        else ""
    )
    return table + ("\n\n" if markdown else "\n") + tail


def write_report(path: Path, results: dict[str, Any], plots: list[Path]) -> None:
    from corewarding.files import atomic_write_text

    b = results["budget"]
    lines = [
        "# Co-rewarding-I on the micro-world",
        "",
        f"Label-free GRPO with cross-view pseudo-labels: {b['steps']} steps, {b['questions_per_step']} question "
        f"pairs a step, G = {b['group_size']}, lr {b['lr']}, k3 KL {b['kl_coef']}, seed {b['seed']}. Evaluated on "
        f"{results['test_questions']} held-out test questions with {results['eval']['n']} samples each at "
        f"temperature {results['eval']['temperature']}.",
        "",
        summary_table(results, markdown=True),
        "",
        "Seconds: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in results["seconds"].items()) + ".",
        "",
        _origin_line(results.get("base_model_origin")),
        "",
    ]
    for p in plots:
        lines += [f"![{p.stem.replace('_', ' ')}]({p.as_posix()})", ""]
    atomic_write_text(path, "\n".join(lines))
