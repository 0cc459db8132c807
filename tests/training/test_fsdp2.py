"""FSDP2 on two CPU processes over gloo, launched with the shipped ``configs/accelerate/*.yaml`` files.

accelerate's own FSDP plugin falls back to DDP on CPU; corewarding applies torch's ``fully_shard`` itself,
so this is the sharded path GPU users run: sharded policy, optimizer, EMA teacher (updated shard by shard)
and KL reference, bf16 compute with fp32 reduction, distributed checkpoints, and resume.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from corewarding.config import save_config
from corewarding.training.checkpoint import load_tensors

ROOT = Path(__file__).resolve().parents[2]
VOLATILE = ("time/", "throughput/")
_ports = itertools.count(29650)


def _launch(accelerate_config: str, config_file: Path, *overrides: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / accelerate_config),
        "--num_processes",
        "2",
        "--main_process_port",
        str(next(_ports)),
        "-m",
        "corewarding",
        "train",
        str(config_file),
        "--no-progress",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _config(micro_config, tmp_path: Path, name: str, method: str, *overrides: str) -> Path:
    cfg = micro_config(
        method,
        tmp_path,
        name,
        "trainer.save_every=1",
        "trainer.keep_checkpoints=3",
        "optim.lr=1e-3",
        *overrides,
    )
    path = tmp_path / f"{name}.yaml"
    save_config(cfg, path)
    return path


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _sharded_full_state(ckpt: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The fp32 policy, optimizer and teacher of a distributed checkpoint, consolidated in one process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / f"{ckpt.parent.name}-{ckpt.name}.pt"
    dcp_to_torch_save(str(ckpt / "state" / "sharded"), str(out))
    state = torch.load(out, weights_only=True)
    flat = {}
    for part in ("model", "teacher") & state.keys():
        flat.update({f"{part}.{k}": v for k, v in state[part].items()})
    return flat


@pytest.mark.slow
def test_fsdp2_run_shards_everything_and_resumes_identically(micro_config, micro_setup, tmp_path):
    config = _config(micro_config, tmp_path, "fsdp", "co_rewarding_ii")
    _launch("fsdp2.yaml", config)
    run = tmp_path / "fsdp"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert any(r["reward/mean"] > 0 for r in rows[1:]), "no reward: the run would prove nothing"
    ckpt = run / "checkpoint-3"
    state = json.loads((ckpt / "state" / "state.json").read_text())
    assert state["strategy"] == "fsdp2"
    assert sorted(p.name for p in (ckpt / "state" / "sharded").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    full = _sharded_full_state(ckpt, tmp_path)

    # the policy trained in fp32 masters; the teacher moved by EMA, less than the policy
    base = {}
    for f in micro_setup.base_model.glob("*.safetensors"):
        base.update(load_tensors(f))
    moved = {
        p: max(float((full[f"{p}.{k}"] - base[k]).abs().max()) for k in base) for p in ("model", "teacher")
    }
    assert 0 < moved["teacher"] < moved["model"], moved
    assert all(v.dtype == torch.float32 for v in full.values())
    # the export is the fp32 policy in trainer.export_dtype (float32 in the micro-world), gathered from shards
    export = load_tensors(ckpt / "model.safetensors")
    assert all(torch.equal(export[k], full[f"model.{k}"].to(export[k].dtype)) for k in export)

    # kill the last checkpoint and resume: the re-run step 3 lands on exactly the same state
    shutil.rmtree(ckpt)
    _launch("fsdp2.yaml", config, "resume=true")
    again = _sharded_full_state(run / "checkpoint-3", tmp_path / "again")
    assert again.keys() == full.keys()
    assert all(torch.equal(again[k], full[k]) for k in full), "resume under FSDP2 diverged"
    assert _metrics(run) == rows


@pytest.mark.slow
def test_fsdp2_and_ddp_make_the_same_update(micro_config, tmp_path):
    """In fp32 the sharded run must follow the replicated one: same rollouts, rewards, losses and weights."""
    overrides = ("model.compute_dtype=float32", "trainer.total_steps=2")
    _launch("fsdp2.yaml", _config(micro_config, tmp_path, "fsdp", "co_rewarding_i", *overrides))
    _launch("ddp.yaml", _config(micro_config, tmp_path, "ddp", "co_rewarding_i", *overrides))
    fsdp, ddp = _metrics(tmp_path / "fsdp"), _metrics(tmp_path / "ddp")
    assert len(fsdp) == len(ddp) == 3
    for a, b in zip(fsdp, ddp, strict=True):
        shared = (a.keys() & b.keys()) - {"dist/param_spread"}
        for key in shared:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    sharded = _sharded_full_state(tmp_path / "fsdp" / "checkpoint-2", tmp_path)
    replicated = load_tensors(tmp_path / "ddp" / "checkpoint-2" / "state" / "model.safetensors")
    for key, value in replicated.items():
        torch.testing.assert_close(sharded[f"model.{key}"], value, rtol=1e-5, atol=1e-6)
