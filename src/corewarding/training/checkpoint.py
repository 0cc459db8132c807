"""Checkpoints that survive SIGKILL and any sharding: assembled in a staging folder, then renamed into place.

``checkpoint-<step>/`` holds two things:

- a **Hugging Face export** at its top (the policy with ``save_pretrained``, in bf16 unless
  ``trainer.export_dtype`` says otherwise, plus the tokenizer, and the teacher the same way under
  ``teacher/``): what ``corewarding eval``, transformers and vLLM load;
- the **training state** under ``state/``, in full precision: ``accelerator.save_state`` writes the
  scheduler, the RNG states and, unsharded or under DeepSpeed, the model and optimizer (DeepSpeed's own
  sharded checkpoint); under FSDP2 the sharded policy, optimizer and teacher go through
  ``torch.distributed.checkpoint`` (each process writes its shards). An unsharded teacher is a safetensors
  file. ``state.json`` holds the step and the data position.

With LoRA (``model.lora.r > 0``) the export at the top is the base with the adapter merged in
(``model.lora.merge_on_export``, the default; else only the tokenizer is there), the adapter itself is under
``adapter/`` in peft's ``save_pretrained`` format (and an EMA teacher's under ``teacher/adapter/``), and the
training state's ``model.safetensors`` / ``teacher.safetensors`` hold the adapters' tensors only: the frozen
base is ``model.name_or_path``.

``COMPLETE`` is written last; a folder without it is ignored, so a run killed while saving resumes from the
checkpoint before. Everything is loaded with ``weights_only=True`` (accelerate's default) or as safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from corewarding.errors import ConfigError

_CKPT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE = "COMPLETE"
STATE = "state"
TEACHER_FILE = "teacher.safetensors"
SHARDED = "sharded"  # torch.distributed.checkpoint folder under state/ (FSDP2)


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


def require_training_state(ckpt: Path) -> Path:
    """``ckpt/state``, or a clear error for a checkpoint that cannot be resumed (an export only, or old)."""
    state = ckpt / STATE
    if not (state / "state.json").is_file():
        raise ConfigError(
            f"checkpoint {ckpt} has no training state ({state}/state.json is missing): it was written by an "
            "older corewarding or is an export only; start a new run (it can load this checkpoint's weights "
            "with model.name_or_path)"
        )
    return state


def export_pretrained(
    model,
    directory: Path,
    state_dict: dict[str, torch.Tensor] | None,
    tokenizer=None,
    dtype: torch.dtype = torch.bfloat16,
) -> None:
    """``save_pretrained`` in ``dtype`` (bf16: the released-model format), from ``state_dict`` when the model
    is sharded. The live model is not touched: a cast copy of each floating tensor is written."""
    source = without_tied(model, state_dict if state_dict is not None else model.state_dict())
    export = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
        for k, v in source.items()
    }
    config = model.config
    old = getattr(config, "dtype", None)
    config.dtype = dtype
    try:
        model.save_pretrained(directory, safe_serialization=True, state_dict=export, is_main_process=True)
    finally:
        config.dtype = old
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def without_tied(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the weights tied to another (lm_head = embeddings): stored once, as transformers
    saves them, and restored by the tie when loaded."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {k: v for k, v in state.items() if k not in tied}


def write_state_json(state_dir: Path, step: int, extra: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))


def publish(run_dir: Path, step: int, keep: int) -> Path:
    """Mark the staged checkpoint complete, rename it into place, prune all but the newest ``keep``."""
    tmp, final = staging_dir(run_dir, step), run_dir / f"checkpoint-{step}"
    (tmp / COMPLETE).write_text("ok\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for _, old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Full-precision tensors as safetensors (shared storage, e.g. tied embeddings, is copied apart)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_matching(model, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that allows only a tied ``lm_head.weight`` to be absent, with a clear error."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied embeddings are saved once; anything else missing is a real mismatch
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise RuntimeError(
            f"checkpoint {source} does not match the model: missing {real_missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
