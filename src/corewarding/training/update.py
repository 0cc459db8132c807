"""One training step's arithmetic: advantages from the rewards, the optimizer update(s) over the step's
rollouts, the loss of one micro-batch, gradient clipping and the check that stops a diverged run.

Why a module of its own: these few functions decide what the weights become, while the rest of the trainer
(sampling, scoring, logging, checkpoints, resume) only moves data to and from them. Kept apart they can be
read, tested (``tests/training/test_trainer_step.py`` checks one step against hand-computed answers) and
mutation-tested on their own. :class:`~corewarding.training.trainer.Trainer` calls them through its methods
``_update``, ``_micro_batch_loss`` and ``_clip_gradients``, which stay the points that tests patch.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch

from corewarding.errors import CorewardingError
from corewarding.rollout.types import Rollout
from corewarding.training import checkpoint as ckpt
from corewarding.training.grpo import group_advantages, policy_loss
from corewarding.training.logprobs import PackedBatch, pack, response_forward

if TYPE_CHECKING:
    from corewarding.training.trainer import Trainer


class TrainingDivergedError(CorewardingError):
    """The loss or the gradient norm stopped being finite: the run stops before the optimizer step, so
    nothing non-finite reaches the weights or a checkpoint, and the last checkpoint stays as it was."""


def step_advantages(rewards: list[list[float]], eps: float) -> list[float]:
    """The GRPO advantage of every rollout of a step, flattened in rollout order (group after group): each
    group's rewards normalised by that group's own mean and std (:func:`~.grpo.group_advantages`)."""
    rows = group_advantages([torch.tensor(row, dtype=torch.float32) for row in rewards], eps=eps)
    return [float(a) for row in rows for a in row]


def update_policy(
    trainer: Trainer, rollouts: list[Rollout], advantages: list[float], old: list[dict] | None, *, step: int
) -> dict[str, float]:
    """``grpo.updates_per_step`` optimizer steps over the step's rollouts (loop index ``step``), each
    accumulated over micro-batches; returns the mean of each statistic.

    Before each optimizer step the losses and the gradient norm are checked (all processes together):
    a non-finite one stops the run with :class:`TrainingDivergedError` and the weights stay as they were.
    """
    cfg, acc = trainer.cfg, trainer.accelerator
    U = cfg.grpo.updates_per_step
    n = len(rollouts)
    per_update = math.ceil(n / U)
    stats: dict[str, list[float]] = {}
    for u in range(U):
        idx = list(range(u * per_update, min(n, (u + 1) * per_update)))
        # the loss of every micro-batch is normalised by the whole update's tokens over all processes,
        # so summing micro-batch gradients (and DDP/FSDP averaging them) gives the global token-mean
        local_tokens = torch.tensor(float(sum(len(rollouts[i].response_ids) for i in idx)), device=acc.device)
        norm = {
            "num_tokens_total": acc.reduce(local_tokens, reduction="sum").item(),
            "num_seqs_total": len(idx) * acc.num_processes,
        }
        mbs = [
            idx[i : i + cfg.optim.micro_batch_size] for i in range(0, len(idx), cfg.optim.micro_batch_size)
        ]
        plan = trainer._micro_batches_plan
        if plan is not None and len(mbs) != plan.micro_batches_per_update:
            raise RuntimeError(
                f"{len(mbs)} micro-batches in this update, but DeepSpeed was set up for "
                f"{plan.micro_batches_per_update}"
            )
        bad_loss: float | None = None  # this process's first non-finite micro-batch loss
        where = (step, u)
        for k, mb in enumerate(mbs):
            last = k == len(mbs) - 1
            # DDP: all-reduce gradients once, on the last micro-batch (FSDP2 reduce-scatters each one)
            sync = (
                contextlib.nullcontext() if last or trainer.strategy != "ddp" else acc.no_sync(trainer.model)
            )
            with sync:
                loss, m = trainer._micro_batch_loss(mb, rollouts, advantages, old, norm)
                if bad_loss is None and not bool(torch.isfinite(loss.detach()).item()):
                    bad_loss = float(loss.detach())
                # DDP, FSDP and ZeRO-3 average gradients over processes; the loss is a global mean
                loss = loss * acc.num_processes
                if plan is not None:  # ZeRO-3: steps inside the last backward
                    if last:  # so the losses are checked before it
                        stop_if_diverged(trainer, where, bad_loss, None)
                    plan.backward(acc, loss, k)
                else:
                    acc.backward(loss)
            for key, val in m.items():
                stats.setdefault(key, []).append(val)
        grad_norm = trainer._clip_gradients()
        if plan is None:
            stop_if_diverged(trainer, where, bad_loss, grad_norm)
        else:  # ZeRO-3 reports the norm of the update it has applied: stop before anything is saved
            stop_if_diverged(trainer, where, None, grad_norm, applied=True)
        stats.setdefault("grad_norm", []).append(float("nan") if grad_norm is None else grad_norm)
        stats.setdefault("lr", []).append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer._weights_changed()
    return {k: sum(v) / len(v) for k, v in stats.items()}


def micro_batch_loss(
    trainer: Trainer,
    mb: list[int],
    rollouts: list[Rollout],
    advantages: list[float],
    old: list[dict] | None,
    norm: dict[str, float],
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of rollouts ``mb`` (policy forward with gradient, reference without) and its stats."""
    cfg, device = trainer.cfg, trainer.accelerator.device
    batch = pack([rollouts[i] for i in mb], trainer.pad_id).to(device)
    temperature = cfg.rollout.temperature
    with trainer._compute():
        # the reference first, without gradient: under LoRA it is the policy's own module run with other
        # adapter weights, which must be back to the policy's before the policy's forward and backward
        ref_lp = None
        with torch.no_grad(), trainer._reference() as reference:
            if reference is not None:
                ref_lp = response_forward(
                    reference, batch, temperature=temperature, share_prompts=trainer._share_prompts
                ).logprobs
        fo = response_forward(
            trainer.model,
            batch,
            temperature=temperature,
            with_stats=not trainer.method.needs_token_stats,
            share_prompts=trainer._share_prompts,
        )
    if old is not None:
        old_lp = padded([old[i]["logprobs"] for i in mb], fo.logprobs)
    else:
        # on-policy (one update per rollout batch): the sampling policy is the current one, so the ratio
        # is exactly 1 and only its gradient matters; detaching the current log-probs gives both without
        # a second forward pass
        old_lp = fo.logprobs.detach()
    adv = torch.tensor([advantages[i] for i in mb], dtype=torch.float32, device=device)
    loss, m = policy_loss(
        fo.logprobs,
        old_lp,
        adv,
        batch.response_mask,
        clip_ratio=cfg.grpo.clip_ratio,
        ref_logprobs=ref_lp,
        kl_coef=cfg.grpo.kl_coef,
        loss_agg=cfg.grpo.loss_agg,
        **norm,
    )
    stats = {key: float(val) for key, val in m.items()}
    if fo.entropy is not None:
        stats.update(masked_means(batch, token_entropy=fo.entropy, self_certainty=fo.self_certainty))
    return loss, stats


def padded(rows: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Per-rollout log-probs of different lengths as one zero-padded tensor shaped like ``like``."""
    out = torch.zeros_like(like)
    for r, lp in enumerate(rows):
        out[r, : lp.numel()] = lp.to(out.device)
    return out


def masked_means(batch: PackedBatch, **per_token: torch.Tensor) -> dict[str, float]:
    """Each ``[B, R]`` per-token statistic averaged over the batch's real response tokens."""
    mask = batch.response_mask
    denom = mask.sum().clamp(min=1)
    return {name: float((values * mask).sum() / denom) for name, values in per_token.items()}


def clip_gradients(trainer: Trainer) -> float | None:
    """Clip the global gradient norm to ``optim.grad_clip``; returns the norm before clipping (None when
    DeepSpeed has none to report yet: ZeRO-3 clips in its own step and reports that step's norm)."""
    max_norm = trainer.cfg.optim.grad_clip
    if trainer.strategy == "fsdp2":
        from corewarding.training.sharding import full_tensor

        # the parameters are DTensor shards: torch computes the norm over all of them (a collective)
        norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), max_norm)
        return float(full_tensor(norm))
    norm = trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), max_norm)
    return None if norm is None else float(norm)


def stop_if_diverged(
    trainer: Trainer,
    where: tuple[int, int],
    bad_loss: float | None,
    grad_norm: float | None,
    applied: bool = False,
) -> None:
    """Raise :class:`TrainingDivergedError` on every process when any process saw a non-finite loss
    (``bad_loss``) or the gradient norm is not finite; called before the optimizer step.

    The flags are summed over the processes (one small all-reduce per update) so that all of them stop
    together: a process that stopped alone would leave the others waiting in the next collective.
    """
    acc = trainer.accelerator
    bad_norm = grad_norm is not None and not math.isfinite(grad_norm)
    flags = torch.tensor([float(bad_loss is not None), float(bad_norm)], device=acc.device)
    if acc.num_processes > 1:
        flags = acc.reduce(flags, reduction="sum")
    loss_flag, norm_flag = (bool(f) for f in flags.tolist())
    if not (loss_flag or norm_flag):
        return
    step, update = where
    cfg = trainer.cfg
    if loss_flag:
        what = "the loss" + (
            f" is {bad_loss}" if bad_loss is not None else " is not finite on another process"
        )
    else:
        what = f"the gradient norm is {grad_norm}"
    of = f" (update {update + 1} of {cfg.grpo.updates_per_step})" if cfg.grpo.updates_per_step > 1 else ""
    latest = ckpt.latest_checkpoint(trainer.run_dir)
    kept = f"the last checkpoint, {latest[1].name}, is intact" if latest else "no checkpoint was written yet"
    stopped = (
        "DeepSpeed applied this update inside its backward, but nothing after it was saved"
        if applied
        else "the run stopped before the optimizer step, so no weights were changed or saved"
    )
    raise TrainingDivergedError(
        f"training diverged at step {step + 1}{of}: {what}; {stopped}, and {kept}. Lower optim.lr "
        f"(now {cfg.optim.lr:g}), keep optim.grad_clip on (now {cfg.optim.grad_clip:g}) or raise the "
        f"warm-up (optim.warmup_ratio={cfg.optim.warmup_ratio:g}), then go on from the last checkpoint "
        "with resume=true (trainer.allow_config_changes=true lets it take the new values)"
    )
