"""What a training run leaves on disk stays trustworthy under hostile input (``corewarding train``):

- a non-finite loss or gradient norm stops the run before the optimizer step, with the last checkpoint
  byte for byte as it was and ``metrics.jsonl`` holding only finite steps;
- ``resume=true`` without a checkpoint redoes everything once (no step twice in the metrics) and says so;
- ``resume=true`` refuses settings that change what the earlier steps mean, and keeps the old config;
- a damaged newest checkpoint is skipped (or fails to load) and an older intact one is used;
- a prompt length limit no prompt fits is one clear error, and validation prompts are filtered, never cut;
- an output folder that is a regular file is refused before anything loads.

Runs are the tiny CPU config (``configs/tiny-cpu.yaml``, a few seconds each); the gt method without
validation keeps most of them to one model and no teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corewarding.cli import main
from corewarding.config import load_config
from corewarding.errors import ConfigError, CorewardingError, DataError
from corewarding.training import checkpoint as ckpt
from corewarding.training.run_log import read_metrics
from corewarding.training.trainer import CheckpointError, Trainer, TrainingDivergedError, train

TINY = "configs/tiny-cpu.yaml"
ROOT = Path(__file__).resolve().parents[2]
QUICK = ["method=gt", "validation.before_training=false", "val_every=0", "save_every=1", "keep_checkpoints=3"]
VOLATILE = ("time/", "throughput/")


def _config(out: Path, *overrides: str):
    return load_config(TINY, [*QUICK, f"output_dir={out}", "trainer.run_name=r", *overrides])


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl")]


def _stable(run: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not k.startswith(VOLATILE)}
        for r in read_metrics(run / "metrics.jsonl")
    ]


def _all_finite(run: Path) -> None:
    """No weights file anywhere in the run holds NaN or inf, and every metric is finite."""
    for path in run.rglob("*.safetensors"):
        for name, tensor in load_file(str(path)).items():
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), f"{path}: {name} is not finite"
    for row in read_metrics(run / "metrics.jsonl"):
        for key, value in row.items():
            if isinstance(value, float):
                assert math.isfinite(value), f"step {row['step']}: {key}={value}"


# ------------------------------------------------------------------------------------- 1. divergence
def test_huge_lr_stops_at_the_first_nonfinite_gradient_norm_with_one_line(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(
        [
            "train",
            TINY,
            *QUICK,
            "validation.before_training=true",
            "total_steps=3",
            "optim.lr=1e30",
            "optim.warmup_ratio=0",
            f"output_dir={out}",
            "trainer.run_name=r",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    line = next(x for x in err.splitlines() if "error:" in x)
    assert line.startswith("corewarding train: error: training diverged at step 2: the gradient norm is nan")
    assert "checkpoint-1, is intact" in line and "optim.lr (now 1e+30)" in line and "resume=true" in line
    run = out / "r"
    assert [p.name for _, p in ckpt.checkpoint_dirs(run)] == ["checkpoint-1"]
    assert not list(run.glob(".checkpoint-*"))  # nothing staged for step 2
    assert _steps(run) == [0, 1]
    _all_finite(run)


def _inject(monkeypatch, at_call: int, kind: str, before=None) -> None:
    """Make the ``at_call``-th update of the next run see an inf gradient (a hook on one weight) or a NaN
    loss; ``before()`` runs just before that update."""
    real_update, real_loss = Trainer._update, Trainer._micro_batch_loss
    calls = {"update": 0}

    def update(self, *args, **kwargs):
        calls["update"] += 1
        if calls["update"] != at_call:
            return real_update(self, *args, **kwargs)
        if before is not None:
            before()
        if kind == "loss":
            monkeypatch.setattr(
                Trainer,
                "_micro_batch_loss",
                lambda self, *a, **k: (lambda out: (out[0] * float("nan"), out[1]))(real_loss(self, *a, **k)),
            )
            return real_update(self, *args, **kwargs)
        weight = next(p for p in self.policy.parameters() if p.requires_grad)
        handle = weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
        try:
            return real_update(self, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(Trainer, "_update", update)


def test_inf_gradient_at_step_k_leaves_the_last_checkpoint_byte_identical_and_loadable(tmp_path, monkeypatch):
    run = tmp_path / "r"
    snapshot: dict[str, str] = {}
    _inject(monkeypatch, 2, "grad", before=lambda: snapshot.update(_hashes(run / "checkpoint-1")))
    with pytest.raises(
        TrainingDivergedError, match=r"at step 2: the gradient norm is inf; the run stopped before"
    ):
        train(_config(tmp_path, "total_steps=3"), progress=False)
    assert snapshot and _hashes(run / "checkpoint-1") == snapshot
    assert [p.name for _, p in ckpt.checkpoint_dirs(run)] == ["checkpoint-1"]
    assert not list(run.glob(".checkpoint-*"))
    assert _steps(run) == [1]
    _all_finite(run)
    assert ckpt.checkpoint_problem(run / "checkpoint-1") is None

    monkeypatch.undo()  # the same run resumed without the fault: checkpoint-1 loads and training goes on
    train(_config(tmp_path, "total_steps=3", "resume=true"), progress=False)
    assert _steps(run) == [1, 2, 3]
    _all_finite(run)


def test_nan_loss_is_named_and_nothing_is_saved(tmp_path, monkeypatch):
    _inject(monkeypatch, 1, "loss")
    with pytest.raises(
        TrainingDivergedError, match=r"at step 1: the loss is nan.*no checkpoint was written yet"
    ):
        train(_config(tmp_path, "total_steps=2"), progress=False)
    run = tmp_path / "r"
    assert ckpt.checkpoint_dirs(run) == [] and not list(run.glob(".checkpoint-*"))
    assert _steps(run) == []


@pytest.mark.slow
def test_two_processes_stop_together_when_one_sees_a_nan_loss(tmp_path, torchrun):
    """Only rank 1's loss is NaN: rank 0 learns it through the reduced flag, both stop, nothing hangs."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        "from corewarding.training.trainer import Trainer\n"
        "real = Trainer._micro_batch_loss\n"
        "def loss(self, *a, **k):\n"
        "    value, stats = real(self, *a, **k)\n"
        "    return (value * float('nan') if self.accelerator.process_index == 1 else value), stats\n"
        "Trainer._micro_batch_loss = loss\n"
        "from corewarding.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [driver, "train", TINY, *QUICK, "total_steps=2", f"output_dir={tmp_path}", "trainer.run_name=r"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = torchrun([*args, "--no-progress"], cwd=ROOT, env=env, timeout=600)
    assert done.returncode != 0
    assert "training diverged at step 1: the loss is not finite on another process" in done.stderr
    assert "training diverged at step 1: the loss is nan" in done.stderr
    assert ckpt.checkpoint_dirs(tmp_path / "r") == []


# ------------------------------------------------------------------------------- 2. resume, no checkpoint
def test_resume_without_a_checkpoint_redoes_every_step_once_and_says_so(tmp_path, capsys):
    # a run killed before its first checkpoint: its metrics and samples on disk, no checkpoint
    overrides = ["save_every=0", "validation.before_training=true", "total_steps=2"]
    train(_config(tmp_path, *overrides), progress=False)
    run = tmp_path / "r"
    first = _stable(run)
    assert [r["step"] for r in first] == [0, 1, 2] and not ckpt.checkpoint_dirs(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "reward/me')  # the torn line a kill leaves
    (run / "rollouts" / "step-000009.jsonl").write_text('{"step": 9}\n')
    capsys.readouterr()

    train(_config(tmp_path, *overrides, "resume=true"), progress=False)
    assert (
        f"resume=true, but there is no checkpoint in {run}: starting from step 0" in capsys.readouterr().err
    )
    assert _stable(run) == first  # steps 0-2 once, as the uninterrupted run wrote them
    assert sorted(p.name for p in (run / "rollouts").iterdir()) == ["step-000001.jsonl", "step-000002.jsonl"]

    # without resume the folder is refused, and nothing in it changes
    before = _hashes(run)
    with pytest.raises(
        ConfigError, match=r"already holds a run \(metrics.jsonl\); pass resume=true to continue"
    ):
        Trainer(_config(tmp_path, *overrides), progress=False)
    assert _hashes(run) == before


def test_a_folder_with_only_checkpoints_is_refused_without_resume(tmp_path):
    train(_config(tmp_path, "total_steps=1"), progress=False)
    run = tmp_path / "r"
    (run / "metrics.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoint-1\); pass resume=true"):
        Trainer(_config(tmp_path, "total_steps=1"), progress=False)


# ------------------------------------------------------------------------------- 3. changed settings
def test_resume_refuses_meaningful_changes_and_keeps_the_config_history(tmp_path):
    run = tmp_path / "r"
    train(_config(tmp_path, "total_steps=1"), progress=False)
    original = (run / "config.yaml").read_bytes()

    changed = ["optim.lr=1e-3", "rollout.n=8", "trainer.seed=7", "total_steps=2", "resume=true"]
    with pytest.raises(ConfigError) as refused:
        Trainer(_config(tmp_path, *changed), progress=False)
    message = str(refused.value)
    assert "optim.lr: 0.0001 → 0.001" in message and "rollout.n: 4 → 8" in message
    assert "trainer.seed: 42 → 7" in message and "total_steps" not in message
    assert "trainer.allow_config_changes=true" in message and "config-step-1.yaml" in message
    assert (run / "config.yaml").read_bytes() == original and not (run / "config_history.jsonl").exists()

    # extending the run and reporting differently change nothing the steps meant
    train(_config(tmp_path, "total_steps=2", "trainer.sample_rollouts=1", "resume=true"), progress=False)
    assert (run / "config-step-1.yaml").read_bytes() == original
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["step"] == 1 and "time" in history[0]
    assert history[0]["changes"] == {"trainer.sample_rollouts": [4, 1], "trainer.total_steps": [1, 2]}

    # allowed explicitly: the run goes on with the new lr, and what steps 1-2 ran with is kept
    second = (run / "config.yaml").read_bytes()
    allowed = ["total_steps=3", "optim.lr=1e-3", "trainer.allow_config_changes=true", "resume=true"]
    train(_config(tmp_path, *allowed), progress=False)
    assert (run / "config-step-2.yaml").read_bytes() == second
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    assert history[1]["changes"]["optim.lr"] == [0.0001, 0.001]
    assert "lr: 0.001" in (run / "config.yaml").read_text()
    assert _steps(run) == [1, 2, 3]


# ------------------------------------------------------------------------------- 4. damaged checkpoints
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
    run = tmp_path / "r"
    train(_config(tmp_path, "total_steps=3"), progress=False)
    # copied out of the file: load_file maps it, and it is about to be truncated
    final = {
        k: v.clone() for k, v in load_file(str(run / "checkpoint-3" / "state" / "model.safetensors")).items()
    }
    uninterrupted = _stable(run)

    weights = run / "checkpoint-3" / "state" / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    capsys.readouterr()
    train(_config(tmp_path, "total_steps=3", "resume=true"), progress=False)
    line = (
        f"checkpoint-3 (state/model.safetensors has {size // 2} bytes, {size} when it was saved) is damaged: "
        "resuming from checkpoint-2, the newest intact checkpoint"
    )
    assert line in capsys.readouterr().err
    again = load_file(str(weights))  # step 3 redone from checkpoint-2, bit for bit
    assert again.keys() == final.keys() and all(torch.equal(again[k], final[k]) for k in final)
    assert ckpt.checkpoint_problem(run / "checkpoint-3") is None
    assert _stable(run) == uninterrupted

    # a file deleted from the newest, and one overwritten in place (same size) in the next: checkpoint-1
    (run / "checkpoint-3" / "state" / "optimizer.bin").unlink()
    optimizer = run / "checkpoint-2" / "state" / "optimizer.bin"
    optimizer.write_bytes(b"\0" * optimizer.stat().st_size)
    train(_config(tmp_path, "total_steps=3", "resume=true"), progress=False)
    err = capsys.readouterr().err
    assert "checkpoint-3 (state/optimizer.bin is missing) is damaged: resuming from checkpoint-2" in err
    assert "checkpoint-2 failed to load (" in err and "): trying checkpoint-1" in err
    assert _steps(run) == [1, 2, 3] and all(
        ckpt.checkpoint_problem(p) is None for _, p in ckpt.checkpoint_dirs(run)
    )

    # none intact: a clear error naming each, and nothing loads
    for _, path in ckpt.checkpoint_dirs(run):
        (path / "state" / "scheduler.bin").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"no checkpoint in .* is intact: checkpoint-3: state/scheduler.bin is missing; checkpoint-2",
    ):
        Trainer(_config(tmp_path, "total_steps=3", "resume=true"), progress=False)


def test_manifest_catches_truncation_and_deletion_and_old_markers_pass(tmp_path):
    staged = ckpt.staging_dir(tmp_path, 4)
    (staged / "state").mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"x" * 10)
    ckpt.write_state_json(staged / "state", 4, {"data_position": 0})
    published = ckpt.publish(tmp_path, 4, keep=0)
    marker = json.loads((published / ckpt.COMPLETE).read_text())
    assert marker["files"] == {
        "model.safetensors": 10,
        "state/state.json": (published / "state/state.json").stat().st_size,
    }
    assert ckpt.checkpoint_problem(published) is None and not staged.exists()
    (published / "model.safetensors").write_bytes(b"x" * 3)
    assert ckpt.checkpoint_problem(published) == "model.safetensors has 3 bytes, 10 when it was saved"
    (published / "model.safetensors").unlink()
    assert ckpt.checkpoint_problem(published) == "model.safetensors is missing"
    (published / ckpt.COMPLETE).write_text("ok\n")  # an older version's marker: nothing to check against
    assert ckpt.checkpoint_problem(published) is None
    found = ckpt.resumable_checkpoints(tmp_path)
    assert found.intact == [(4, published)] and found.damaged == []


# ------------------------------------------------------------------------------- 5. prompt lengths
def test_no_training_prompt_fits_is_one_error_naming_the_setting_file_and_shortest(tmp_path):
    with pytest.raises(DataError) as err:
        Trainer(_config(tmp_path, "data.max_prompt_length=50"), progress=False)
    assert str(err.value).startswith("data.max_prompt_length=50 is shorter than every training prompt in ")
    assert "train_original.parquet (the shortest prompt has 59 tokens)" in str(err.value)
    assert "raise data.max_prompt_length to at least 59" in str(err.value)


def test_long_validation_prompts_are_filtered_and_counted_never_cut(tmp_path, monkeypatch, capsys):
    from corewarding.rollout import hf_engine

    # the four validation prompts have 82, 75, 84 and 66 tokens; training prompts start at 59
    encoded: list[int] = []
    real = hf_engine.prompt_token_ids

    def spy(tokenizer, conversations):
        ids = real(tokenizer, conversations)
        encoded.extend(len(x) for x in ids)
        return ids

    monkeypatch.setattr(hf_engine, "prompt_token_ids", spy)
    cfg = _config(tmp_path, "data.max_prompt_length=80", "validation.before_training=true", "total_steps=1")
    train(cfg, progress=False)
    assert "data.max_prompt_length=80: dropped" in capsys.readouterr().err
    assert encoded and max(encoded) <= 80, "a prompt longer than max_prompt_length reached the engine"
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert rows[0]["step"] == 0 and rows[0]["data/val_dropped_long_prompts"] == 2
    assert rows[0]["val/questions"] == 2 and rows[0]["data/train_dropped_long_prompts"] > 0
    assert "data/val_dropped_long_prompts" not in rows[1]


# ------------------------------------------------------------------------------- 6. output folder
def test_an_output_folder_that_is_a_file_is_refused_before_anything_loads(tmp_path, monkeypatch, capsys):
    import corewarding.models.loading as loading

    monkeypatch.setattr(
        loading, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("a model was loaded")
    )
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    code = main(["train", TINY, *QUICK, f"output_dir={blocker}", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"corewarding train: error: trainer.output_dir={str(blocker)!r} is a regular file; expected a folder "
        "(or a path to create)"
    ]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r").write_text("")
    with pytest.raises(
        CorewardingError, match=r"the run folder trainer.output_dir/trainer.run_name=.*is a regular file"
    ):
        Trainer(_config(tmp_path / "out"), progress=False)


# ------------------------------------------------------------------------------- 7. one file policy
def test_no_temporary_file_is_left_and_samples_are_whole_jsonl(tmp_path):
    train(_config(tmp_path, "total_steps=1"), progress=False)
    run = tmp_path / "r"
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    for path in (run / "rollouts").iterdir():
        assert path.read_bytes().endswith(b"\n") and all(json.loads(x) for x in path.read_text().splitlines())
