"""Checkpoints that survive SIGKILL: written to a temporary folder, then renamed into place.

A checkpoint is ``checkpoint-<step>/`` holding the policy in Hugging Face format (loadable on its own), the
optimizer and scheduler states, the step, and the EMA teacher's weights. Data position and sampling seeds
are derived from the step, so nothing else is needed to continue exactly where a run stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_CKPT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE = "COMPLETE"


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints (with the COMPLETE marker), oldest first."""
    found = []
    if run_dir.is_dir():
        for child in run_dir.iterdir():
            m = _CKPT.match(child.name)
            if m and (child / COMPLETE).exists():
                found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def staging_dir(run_dir: Path, step: int) -> Path:
    """Where ``checkpoint-<step>`` is assembled before the rename that publishes it."""
    return run_dir / f".checkpoint-{step}.tmp"


def optimizer_shard_path(ckpt: Path, rank: int) -> Path:
    """Per-process optimizer state, used when the optimizer itself is sharded (FSDP, ZeRO-3)."""
    return ckpt / f"optimizer-rank{rank}.pt"


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler,
    teacher_model=None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
    state_dict: dict[str, torch.Tensor] | None = None,
    optimizer_in_shards: bool = False,
) -> Path:
    """Write ``checkpoint-<step>`` atomically and keep only the newest ``keep`` checkpoints.

    ``state_dict`` is the full model state when the live model is sharded (else ``model``'s own is used).
    With ``optimizer_in_shards`` every process has already written its optimizer shard into the staging
    folder (:func:`optimizer_shard_path`), so only the scheduler goes into ``trainer_state.pt``.
    """
    final = run_dir / f"checkpoint-{step}"
    tmp = staging_dir(run_dir, step)
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    state = {"scheduler": scheduler.state_dict()}
    if not optimizer_in_shards:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, tmp / "trainer_state.pt")
    if teacher_model is not None:
        teacher_model.save_pretrained(tmp / "teacher", safe_serialization=True)
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=2))
    (tmp / COMPLETE).write_text("ok\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(
    ckpt: Path, optimizer: torch.optim.Optimizer, scheduler, rank: int = 0
) -> dict[str, Any]:
    """Restore optimizer (whole, or this process's shard) and scheduler in place; return ``state.json``."""
    state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    else:
        optimizer.load_state_dict(
            torch.load(optimizer_shard_path(ckpt, rank), map_location="cpu", weights_only=False)
        )
    scheduler.load_state_dict(state["scheduler"])
    return json.loads((ckpt / "state.json").read_text())


def load_weights_into(model, directory: Path) -> None:
    """Copy weights saved with ``save_pretrained`` in ``directory`` into ``model`` (same architecture)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {directory}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied embeddings are saved once; anything else missing is a real mismatch
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise RuntimeError(
            f"checkpoint {directory} does not match the model: missing {real_missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
