"""Checkpoint folders on disk: numeric ordering, publishing a staged checkpoint, pruning to the newest K.

No model is involved: ``publish``, ``checkpoint_dirs`` and ``latest_checkpoint`` only look at folder names,
the ``COMPLETE`` marker and file sizes, so the folders here hold a few bytes each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corewarding.training.checkpoint import (
    COMPLETE,
    checkpoint_dirs,
    checkpoint_problem,
    latest_checkpoint,
    publish,
    staging_dir,
)


def _stage(run_dir: Path, step: int) -> Path:
    """A staged checkpoint as the trainer leaves it before ``publish``: an export and a training state."""
    tmp = staging_dir(run_dir, step)
    (tmp / "state").mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"w" * (10 + step))
    (tmp / "state" / "state.json").write_text(json.dumps({"step": step}))
    return tmp


def _complete(run_dir: Path, step: int) -> Path:
    """A finished checkpoint made by hand (marker present), as an earlier run would have left it."""
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / COMPLETE).write_text("ok")
    return path


def _publish(run_dir: Path, steps, keep: int) -> None:
    for step in steps:
        _stage(run_dir, step)
        publish(run_dir, step, keep)


def _names(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


# ------------------------------------------------------------------------------------------------ ordering


def test_checkpoint_dirs_are_ordered_by_step_number_not_by_name(tmp_path: Path) -> None:
    for step in (10, 9, 100, 2, 11):
        _complete(tmp_path, step)
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [2, 9, 10, 11, 100]
    assert all(path == tmp_path / f"checkpoint-{step}" for step, path in checkpoint_dirs(tmp_path))
    assert latest_checkpoint(tmp_path) == (100, tmp_path / "checkpoint-100")


def test_checkpoint_10_comes_after_checkpoint_9(tmp_path: Path) -> None:
    _complete(tmp_path, 9)
    _complete(tmp_path, 10)
    assert latest_checkpoint(tmp_path) == (10, tmp_path / "checkpoint-10")


def test_only_finished_checkpoint_folders_count(tmp_path: Path) -> None:
    _complete(tmp_path, 3)
    (tmp_path / "checkpoint-7").mkdir()  # killed while saving: no marker
    _stage(tmp_path, 8)  # being assembled
    (tmp_path / "checkpoint-9").write_text("a file, not a folder")
    for name in ("checkpoint-x", "checkpoint-5-old", "checkpoint--4", "ckpt-6", "checkpoint-05.bak"):
        (tmp_path / name).mkdir()
        (tmp_path / name / COMPLETE).write_text("ok")
    assert checkpoint_dirs(tmp_path) == [(3, tmp_path / "checkpoint-3")]
    assert latest_checkpoint(tmp_path) == (3, tmp_path / "checkpoint-3")


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert checkpoint_dirs(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None  # a run folder that does not exist yet
    (tmp_path / "checkpoint-1").mkdir()
    assert latest_checkpoint(tmp_path) is None


# ------------------------------------------------------------------------------------------------ publishing


def test_publish_renames_the_staged_folder_and_writes_the_manifest_last(tmp_path: Path) -> None:
    _stage(tmp_path, 4)
    final = publish(tmp_path, 4, keep=0)
    assert final == tmp_path / "checkpoint-4"
    assert not staging_dir(tmp_path, 4).exists()
    marker = json.loads((final / COMPLETE).read_text())
    assert marker == {"step": 4, "files": {"model.safetensors": 14, "state/state.json": 11}}  # {"step": 4}
    assert checkpoint_problem(final) is None
    assert latest_checkpoint(tmp_path) == (4, final)


def test_publish_replaces_an_older_save_of_the_same_step(tmp_path: Path) -> None:
    old = _complete(tmp_path, 4)
    (old / "stale.bin").write_bytes(b"from the run that was resumed from an earlier checkpoint")
    _stage(tmp_path, 4)
    publish(tmp_path, 4, keep=0)
    assert not (old / "stale.bin").exists()
    assert set(json.loads((old / COMPLETE).read_text())["files"]) == {"model.safetensors", "state/state.json"}


# ------------------------------------------------------------------------------------------------ pruning


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_k_prunes_all_but_the_newest_k(tmp_path: Path, keep: int) -> None:
    _publish(tmp_path, [1, 2, 3, 4, 5], keep)
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [1, 2, 3, 4, 5][-keep:]
    assert _names(tmp_path) == {f"checkpoint-{s}" for s in [1, 2, 3, 4, 5][-keep:]}


def test_pruning_goes_by_step_number_across_a_digit_boundary(tmp_path: Path) -> None:
    # by name, checkpoint-9 would sort after checkpoint-10 and checkpoint-11, and survive in their place
    _publish(tmp_path, [8, 9, 10, 11], keep=2)
    assert _names(tmp_path) == {"checkpoint-10", "checkpoint-11"}
    _publish(tmp_path, [99, 100], keep=1)
    assert _names(tmp_path) == {"checkpoint-100"}


def test_keep_zero_keeps_every_checkpoint(tmp_path: Path) -> None:
    _publish(tmp_path, [1, 2, 3, 9, 10], keep=0)
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [1, 2, 3, 9, 10]


def test_keep_above_the_count_prunes_nothing(tmp_path: Path) -> None:
    _publish(tmp_path, [1, 2], keep=5)
    assert _names(tmp_path) == {"checkpoint-1", "checkpoint-2"}


def test_pruning_ignores_staging_and_unfinished_folders(tmp_path: Path) -> None:
    unfinished = tmp_path / "checkpoint-1"  # killed while saving, before its marker: not a checkpoint
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"partial")
    other_staging = _stage(tmp_path, 50)  # another save being assembled
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "checkpoint-2-copy").mkdir()
    (tmp_path / "checkpoint-2-copy" / COMPLETE).write_text("ok")
    _publish(tmp_path, [2, 3, 4], keep=1)
    assert _names(tmp_path) == {
        "checkpoint-1",
        "checkpoint-4",
        other_staging.name,
        "metrics.jsonl",
        "checkpoint-2-copy",
    }
    assert (unfinished / "model.safetensors").read_bytes() == b"partial"
    assert (other_staging / "state" / "state.json").is_file()


def test_pruning_counts_finished_checkpoints_left_by_an_earlier_run(tmp_path: Path) -> None:
    for step in (5, 6, 7):
        _complete(tmp_path, step)
    _publish(tmp_path, [8], keep=2)
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [7, 8]
