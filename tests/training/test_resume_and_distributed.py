"""Kill-and-resume with a real SIGKILL, and a 2-process CPU run (gloo) that keeps ranks in sync."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

TINY = "configs/tiny-cpu.yaml"
ROOT = Path(__file__).resolve().parents[2]
VOLATILE = ("time/", "throughput/")


def _cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "corewarding",
        "train",
        TINY,
        "method=co_rewarding_ii",
        "total_steps=6",
        "save_every=1",
        "val_every=3",
        "keep_checkpoints=3",
        f"output_dir={out}",
        "trainer.run_name=r",
        "--no-progress",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cmd(straight), cwd=ROOT, env=_env(), check=True, timeout=600, capture_output=True)

    proc = subprocess.Popen(
        _cmd(killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = killed / "r" / "checkpoint-2" / "COMPLETE"
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, "training exited before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "r" / "checkpoint-6").exists(), "the run finished before the kill"
    steps_before = [r["step"] for r in _metrics(killed / "r")]
    assert max(steps_before) < 6

    subprocess.run(
        _cmd(killed, "resume=true"), cwd=ROOT, env=_env(), check=True, timeout=600, capture_output=True
    )
    # the full-precision training state (policy, EMA teacher) and the exports beside it, bit for bit
    a, b = straight / "r" / "checkpoint-6", killed / "r" / "checkpoint-6"
    files = [
        "model.safetensors",
        "teacher/model.safetensors",
        "state/model.safetensors",
        "state/teacher.safetensors",
    ]
    for name in files:
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa and wa.keys() == wb.keys()
        for k in wa:
            assert (wa[k] == wb[k]).all(), f"{name}: {k} differs after resume"
    ma, mb = _metrics(straight / "r"), _metrics(killed / "r")
    assert [r["step"] for r in mb] == [0, 1, 2, 3, 4, 5, 6]
    assert ma == mb


@pytest.mark.slow
def test_two_cpu_processes_stay_in_sync_on_whole_groups(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "corewarding",
        "train",
        TINY,
        "method=co_rewarding_i",
        "total_steps=2",
        "batch_questions=4",
        "trainer.sample_rollouts=1000",
        f"output_dir={tmp_path}",
        "trainer.run_name=ddp",
        "--no-progress",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[-1]["dist/param_spread"] == 0.0
    for step in (1, 2):
        owners: dict[str, set[int]] = {}
        views: dict[str, set[str]] = {}
        for rank in (0, 1):
            lines = (run / "rollouts" / f"step-{step:06d}-rank{rank}.jsonl").read_text().splitlines()
            assert lines
            for rec in map(json.loads, lines):
                assert rec["group_size"] == 4
                owners.setdefault(rec["pair_id"], set()).add(rank)
                views.setdefault(rec["pair_id"], set()).add(rec["view"])
        assert len(owners) == 4, "each step covers batch_questions pairs"
        assert all(len(r) == 1 for r in owners.values()), "a pair was split across processes"
        assert all(v == {"original", "rephrased"} for v in views.values())
