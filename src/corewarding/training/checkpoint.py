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
checkpoint before. It holds a manifest (every file's relative path and size at publish time), so a checkpoint
whose files were later truncated or deleted (a full disk, a partial copy, a clean-up gone wrong) is found
before anything is loaded from it: :func:`resumable_checkpoints` lists the intact ones, newest first, and
says what is wrong with the others, and the trainer falls back to the newest intact one. Markers written by
older versions (``ok``) hold no manifest; such checkpoints are taken as they are. Everything is loaded with
``weights_only=True`` (accelerate's default) or as safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corewarding.errors import ConfigError
from corewarding.files import atomic_write_json, fsync_dir

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
    """``state/state.json``: the step and the data position, written atomically like every file we own."""
    atomic_write_json(state_dir / "state.json", {"step": step, **extra})


def manifest(directory: Path) -> dict[str, int]:
    """Every file under ``directory`` (but the marker) as relative path -> size in bytes, sorted."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != COMPLETE:
            files[path.relative_to(directory).as_posix()] = path.stat().st_size
    return files


def publish(run_dir: Path, step: int, keep: int) -> Path:
    """Mark the staged checkpoint complete, rename it into place, prune all but the newest ``keep``.

    The marker holds the manifest of what was staged, written atomically after everything else (the
    processes' shards included: the caller waits for every process first), so it can be checked on resume.
    """
    tmp, final = staging_dir(run_dir, step), run_dir / f"checkpoint-{step}"
    atomic_write_json(tmp / COMPLETE, {"step": step, "files": manifest(tmp)})
    if final.exists():
        shutil.rmtree(final)  # a damaged or older save of this step (a resume from an earlier checkpoint)
    os.replace(tmp, final)  # a folder: corewarding.files publishes files; the rename is made durable alike
    fsync_dir(run_dir)
    if keep > 0:
        for _, old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_problem(ckpt: Path) -> str | None:
    """What is wrong with the finished checkpoint ``ckpt`` (None when intact): a file of its manifest that
    is missing or has another size than when it was published, or no training state at all."""
    if not (ckpt / STATE / "state.json").is_file():
        return f"{STATE}/state.json is missing"
    try:
        marker = json.loads((ckpt / COMPLETE).read_bytes())
    except (OSError, ValueError):
        marker = None  # an older version's "ok": no manifest to check against
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict):
        return None
    for name, size in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, {size} when it was saved"
    return None


@dataclass
class Resumable:
    """The run's finished checkpoints sorted for a resume: the intact ones newest first, and the damaged ones
    (newer than the newest intact one or not) with what is wrong with each."""

    intact: list[tuple[int, Path]]
    damaged: list[tuple[int, Path, str]]


def resumable_checkpoints(run_dir: Path) -> Resumable:
    """Every finished checkpoint of ``run_dir`` checked against its manifest (see the module docstring)."""
    intact: list[tuple[int, Path]] = []
    damaged: list[tuple[int, Path, str]] = []
    for step, path in reversed(checkpoint_dirs(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            intact.append((step, path))
        else:
            damaged.append((step, path, problem))
    return Resumable(intact, damaged)


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
