"""Run logging: ``metrics.jsonl`` as ever, and the experiment trackers of ``trainer.loggers`` through
accelerate's tracker API (``Accelerator(log_with=...)``, ``init_trackers``, ``log``), a missing tracker
package being one clear ConfigError at start naming the extra to install."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

from corewarding.config import load_config
from corewarding.errors import ConfigError, DataError
from corewarding.training.run_log import (
    LOGGERS,
    RunLogger,
    flat_config,
    read_metrics,
    require_trackers,
    truncate_metrics,
)
from corewarding.training.trainer import Trainer, train

TINY = "configs/tiny-cpu.yaml"


def test_jsonl_alone_is_written_as_before(tmp_path):
    logger = RunLogger(tmp_path, None, [], {"method": "gt"}, "run")
    logger.log(0, {"val/avg@2": 0.25})
    logger.log(1, {"reward/mean": 0.5, "lr": 1e-4, "note": "text", "flag": True})
    logger.close()
    assert (tmp_path / "metrics.jsonl").read_text() == (
        '{"step": 0, "val/avg@2": 0.25}\n'
        '{"step": 1, "reward/mean": 0.5, "lr": 0.0001, "note": "text", "flag": true}\n'
    )
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_loggers_list_every_tracker_and_flat_config_is_scalars():
    assert LOGGERS == ("jsonl", "tensorboard", "wandb", "trackio", "mlflow")
    assert require_trackers(["jsonl", "tensorboard", "tensorboard"]) == ["tensorboard"]
    assert flat_config(
        {
            "method": "gt",
            "optim": {"lr": 1e-4, "betas": [0.9, 0.999]},
            "method_options": {},
            "data": {"val": None},
        }
    ) == {
        "method": "gt",
        "optim.lr": 1e-4,
        "optim.betas": "[0.9, 0.999]",
        "method_options": "{}",
        "data.val": None,
    }
    with pytest.raises(
        ConfigError, match=r"trainer.loggers=\['jsonl', 'neptune'\]: expected a list drawn from jsonl, "
    ):
        load_config(TINY, ["loggers=[jsonl,neptune]"])


@pytest.mark.parametrize("tracker", ["wandb", "trackio", "mlflow"])
def test_a_missing_tracker_package_fails_at_start_naming_the_extra(tracker, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a)
    )
    cfg = load_config(TINY, [f"loggers=[jsonl,{tracker}]", f"output_dir={tmp_path}"])  # the config is fine
    message = rf"trainer.loggers includes {tracker}, but the {tracker} package is not installed; install it with pip install 'corewarding\[{tracker}\]'"
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, progress=False)
    assert not any(tmp_path.iterdir()), "nothing may load or be written before the check"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_mlflow_not_installed_here_is_the_clear_error(tmp_path):
    cfg = load_config(TINY, ["loggers=[jsonl,tensorboard,mlflow]", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"pip install 'corewarding\[mlflow\]'"):
        Trainer(cfg, progress=False)


def test_an_accelerator_built_without_the_tracker_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"includes tensorboard, but the Accelerator given to the trainer"):
        RunLogger(tmp_path, SimpleNamespace(log_with=[]), ["tensorboard"], {}, "run")


@pytest.mark.slow
def test_tensorboard_through_accelerate_gets_every_step_metric(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(
        TINY,
        [
            "method=majority_vote",
            "loggers=[jsonl,tensorboard]",
            "total_steps=2",
            "save_every=2",
            f"output_dir={tmp_path}",
        ],
    )
    trainer = Trainer(cfg, progress=False)
    assert [str(t) for t in trainer.accelerator.log_with] == ["tensorboard"]
    train_result = trainer.train()
    run = train_result.run_dir
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]  # jsonl as ever
    assert trainer.accelerator.trackers == []  # finished and let go at the end of training

    # accelerate's TensorBoard tracker: <run>/tensorboard/<project>, the hyperparameters in a dated folder
    events = run / "tensorboard" / cfg.trainer.wandb_project
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    logged = set(acc.Tags()["scalars"])
    for step_row in rows:
        for key, value in step_row.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            assert key in logged, f"{key} missing from TensorBoard: {sorted(logged)}"
            by_step = {e.step: e.value for e in acc.Scalars(key)}
            assert by_step[step_row["step"]] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    hparams = list(events.glob("*/hparams.yml"))
    assert len(hparams) == 1 and "method: majority_vote" in hparams[0].read_text()
    assert "optim.lr:" in hparams[0].read_text()


@pytest.mark.slow
def test_resume_appends_to_tensorboard_and_keeps_jsonl_truncated(tmp_path):
    overrides = ["method=gt", "loggers=[jsonl,tensorboard]", "save_every=1", f"output_dir={tmp_path}"]
    overrides += ["validation.before_training=false", "val_every=0"]
    train(load_config(TINY, [*overrides, "total_steps=1"]), progress=False)
    run = tmp_path / "gt"
    with open(run / "metrics.jsonl", "a") as f:  # a step the killed run logged after its last checkpoint
        f.write(json.dumps({"step": 2, "reward/mean": 9.0}) + "\n")
    train(load_config(TINY, [*overrides, "total_steps=2", "resume=true"]), progress=False)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["reward/mean"] != 9.0
    assert len(list((run / "tensorboard" / "corewarding").glob("events.out.tfevents.*"))) == 2


def test_truncate_metrics_keeps_what_a_resume_will_not_write_again(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    records = "".join(json.dumps({"step": s, "reward/mean": s / 10}) + "\n" for s in range(5))
    path.write_text(records + '{"step": 5, "rew')  # the torn last line of a killed run
    assert truncate_metrics(path, 2) == 2  # steps 3 and 4 (the torn line is reported, not counted)
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2]
    assert "torn last line" in caplog.text
    assert truncate_metrics(path, 0) == 3  # no checkpoint: everything is redone, step 0's validation too
    assert path.read_text() == ""
    assert truncate_metrics(tmp_path / "missing.jsonl", 3) == 0 and not (tmp_path / "missing.jsonl").exists()


def test_metrics_damaged_before_the_last_line_is_an_error_not_a_silent_skip(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl: line 2: not valid JSON"):
        read_metrics(path)
    with pytest.raises(DataError, match=r"line 2"):
        truncate_metrics(path, 1)
    assert path.read_text() == '{"step": 0}\nnot json\n{"step": 2}\n'  # left as it was


def test_the_logger_appends_after_a_torn_tail_without_gluing_onto_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "lr": 0.1}\n{"step": 2, "l')
    logger = RunLogger(tmp_path)
    logger.log(2, {"lr": 0.2})
    assert path.read_text() == '{"step": 1, "lr": 0.1}\n{"step": 2, "lr": 0.2}\n'
