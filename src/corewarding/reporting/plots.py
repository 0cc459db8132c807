"""Training curves as PNGs from ``metrics.jsonl`` (one file per curve, plus an overview grid).

Figures are saved through ``corewarding.files.atomic_output`` (temporary file, then rename), so a run killed
while plotting, or a reader opening a PNG while it is rewritten, never sees half an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from corewarding.files import atomic_output
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
        _save(fig, path)
        written.append(path)
    return written


SMOOTH_WINDOW = 10  # steps in the rolling mean drawn over noisy per-step curves (16 questions a step)


def rolling_mean(ys: list[float], window: int = SMOOTH_WINDOW) -> list[float]:
    """Trailing mean over up to ``window`` values, same length as ``ys`` (the first points average fewer)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y
        if i >= window:
            total -= ys[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_comparison(
    runs: dict[str, Path],
    out_path: str | Path,
    curves: tuple[str, ...] = ("reward/mean", "pseudo_label/accuracy", "val/avg@*", "response_length/mean"),
) -> Path:
    """One figure, one panel per curve, one line per run (method).

    Each run keeps one color in every panel. Per-step curves are noisy at micro-world batch sizes, so they
    are drawn faint with a bold rolling mean on top. Confidence rewards (self-certainty around 9 nats) share
    the reward panel with 0/1 rewards, so that panel switches to a symlog scale (linear within ±1) when any
    value leaves [-2, 2], keeping both readable.
    """
    out_path = Path(out_path)
    rows = {label: read_metrics(Path(run_dir) / "metrics.jsonl") for label, run_dir in runs.items()}
    panels_width, legend_width = 4.2 * len(curves), 1.6  # inches
    fig, axes = plt.subplots(1, len(curves), figsize=(panels_width + legend_width, 3.6), squeeze=False)
    axes = axes[0]
    smoothed = False
    for ax, key in zip(axes, curves, strict=True):
        extreme = 0.0
        for i, (label, run_rows) in enumerate(rows.items()):
            color = f"C{i % 10}"
            for k, (xs, ys) in _series(run_rows, key).items():
                name = label if k == key or key.endswith("*") else f"{label} {k}"
                extreme = max(extreme, *(abs(y) for y in ys))
                if len(ys) > 2 * SMOOTH_WINDOW:
                    ax.plot(xs, ys, color=color, alpha=0.2, linewidth=0.8)
                    ax.plot(xs, rolling_mean(ys), color=color, label=name)
                    smoothed = True
                else:
                    ax.plot(xs, ys, color=color, marker=".", label=name)
        if key == "reward/mean" and extreme > 2:
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(key.rstrip("*").rstrip("@") if key.endswith("*") else key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    # one legend for the figure, from every panel: a run without some curve (gt has no pseudo-labels) still shows
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8)
    if smoothed:
        fig.suptitle(f"faint: every step; bold: {SMOOTH_WINDOW}-step rolling mean", fontsize=8, y=0.99)
    fig.tight_layout(rect=(0, 0, panels_width / (panels_width + legend_width), 1))
    _save(fig, out_path)
    return out_path


def _save(fig: Any, path: Path) -> None:
    """Save ``fig`` as ``path`` atomically and close it, also when saving fails (figures hold memory)."""
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
