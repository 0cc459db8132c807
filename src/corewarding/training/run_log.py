"""Per-step metrics: JSONL always, and experiment trackers (TensorBoard, W&B, Trackio, MLflow) through
accelerate's tracker API when ``trainer.loggers`` names them.

``metrics.jsonl`` is appended and fsynced every step so a killed run loses nothing it reported; on resume
the records the restarted run will write again are dropped (see :func:`truncate_metrics`), so the file reads
as one uninterrupted run. Writing and reading follow the one file policy of :mod:`corewarding.files`: a torn
last line (a write cut by a kill) is dropped and reported, damage anywhere else is an error naming the line. The trackers
are accelerate's: the trainer builds its ``Accelerator(log_with=...)`` with the ones named (TensorBoard
writes under ``<run>/tensorboard/<project>``), and the main process's ``RunLogger`` starts them
(``init_trackers``), logs each step's numbers to them (``accelerator.log``) and finishes them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corewarding.errors import ConfigError
from corewarding.files import append_jsonl, read_jsonl, rewrite_jsonl

# trainer.loggers: accelerate tracker name -> (the package it imports, the corewarding extra that installs it;
# None for a dependency of corewarding itself)
TRACKERS: dict[str, tuple[str, str | None]] = {
    "tensorboard": ("tensorboard", None),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
}
LOGGERS = ("jsonl", *TRACKERS)  # jsonl: metrics.jsonl, written whatever the list says


def require_trackers(loggers: Iterable[str]) -> list[str]:
    """The accelerate trackers among ``loggers``, once each, in order, after checking that each one's package
    is installed: accelerate itself would drop a missing one with a debug message, so this is a ConfigError
    naming the extra to install."""
    names = list(dict.fromkeys(name for name in loggers if name in TRACKERS))
    for name in names:
        package, extra = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            how = f"pip install 'corewarding[{extra}]'" if extra else f"pip install {package}"
            raise ConfigError(
                f"trainer.loggers includes {name}, but the {package} package is not installed; "
                f"install it with {how}"
            )
    return names


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as the flat ``section.key -> scalar`` hyperparameters every tracker accepts (lists and
    empty mappings as their text)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, bool | int | float | str):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep only the records that a run resuming after step ``last_step`` will not write again, atomically;
    how many were dropped (a torn last line is dropped too, and reported).

    From a checkpoint (``last_step > 0``) those are the records with ``step <= last_step``. From no checkpoint
    (``last_step == 0``) the restarted run redoes everything, the validation before training included, so
    nothing is kept: a record of step 0 would otherwise appear twice.
    """
    if last_step <= 0:
        return rewrite_jsonl(path, lambda record: False, "metrics records")
    return rewrite_jsonl(path, lambda record: _step(record) <= last_step, "metrics records")


def _step(record: dict[str, Any]) -> int:
    step = record.get("step", 0)
    return step if isinstance(step, int) else 0


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (none when it is missing), read under the one JSONL rule."""
    return read_jsonl(path, "metrics records").rows


class RunLogger:
    """The main process's metric writer: ``metrics.jsonl``, and the accelerate ``trackers`` that
    ``accelerator`` was built with (``log_with``; see ``require_trackers``)."""

    def __init__(
        self,
        run_dir: Path,
        accelerator: Any = None,
        trackers: list[str] | None = None,
        config: dict[str, Any] | None = None,
        run_name: str | None = None,
        project: str = "corewarding",
        resume: bool = False,
    ):
        self.path = run_dir / "metrics.jsonl"
        self._accelerator = accelerator if trackers else None
        if not trackers:
            return
        built = {str(t) for t in getattr(accelerator, "log_with", None) or []}
        missing = [name for name in trackers if name not in built]
        if missing:
            raise ConfigError(
                f"trainer.loggers includes {', '.join(missing)}, but the Accelerator given to the trainer was "
                f"built without it: pass Accelerator(log_with={trackers!r}, ...), or let the trainer build it"
            )
        run_name = run_name or run_dir.name
        accelerator.init_trackers(
            project,
            config=flat_config(config or {}),
            init_kwargs={
                "wandb": {"name": run_name, "dir": str(run_dir), "resume": "allow"},
                "trackio": {"name": run_name, "resume": "allow" if resume else "never"},
                "mlflow": {"run_name": run_name},
            },
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        append_jsonl(self.path, [{"step": step, **metrics}])  # flushed and fsynced before training goes on
        if self._accelerator is not None:
            numeric = {
                k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            self._accelerator.log(numeric, step=step)

    def close(self) -> None:
        """Finish the trackers. Not ``accelerator.end_training()``: that also destroys the process group, which
        the trainer (and whoever built the accelerator) still uses after the last step."""
        if self._accelerator is not None:
            for tracker in self._accelerator.trackers:
                tracker.finish()
            self._accelerator.trackers.clear()
            self._accelerator = None
