"""Training curves as PNGs from ``metrics.jsonl`` (one file per curve, plus an overview grid)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from corewarding.training.run_log import read_metrics

CURVES = {
    "reward": ["reward/mean", "reward/original", "reward/rephrased"],
    "pseudo_label_accuracy": ["pseudo_label/accuracy", "rollout/accuracy"],
    "validation_accuracy": ["val/avg@*", "val/maj@*", "val/pass@*"],
    "response_length": ["response_length/mean"],
    "kl_and_entropy": ["kl", "token_entropy"],
}


def _series(rows: list[dict], key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for k, v in row.items():
            match = k == key or (key.endswith("*") and k.startswith(key[:-1]))
            if match and isinstance(v, (int, float)):
                xs, ys = out.setdefault(k, ([], []))
                xs.append(int(row["step"]))
                ys.append(float(v))
    return out


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<out_dir>/<curve>.png`` (default ``run_dir/plots``) for each curve with data; return them."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keys in CURVES.items():
        series = {}
        for key in keys:
            series.update(_series(rows, key))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        ax.set_xlabel("step")
        ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_comparison(
    runs: dict[str, Path],
    out_path: str | Path,
    curves: tuple[str, ...] = ("reward/mean", "pseudo_label/accuracy", "val/avg@*", "response_length/mean"),
) -> Path:
    """One figure, one panel per curve, one line per run (method)."""
    out_path = Path(out_path)
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6))
    for ax, key in zip(axes, curves, strict=True):
        for label, run_dir in runs.items():
            for k, (xs, ys) in _series(read_metrics(Path(run_dir) / "metrics.jsonl"), key).items():
                ax.plot(xs, ys, label=label if k == key or key.endswith("*") else f"{label} {k}")
        ax.set_title(key.rstrip("*").rstrip("@") if key.endswith("*") else key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
