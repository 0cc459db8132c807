"""GRPO as pure tensor functions: group-normalized advantages, the clipped surrogate, the k3 KL term.

Nothing here knows about models, rollouts or rewards methods, so every formula can be checked by hand in
tests. Conventions follow verl's GRPO (the paper's code base) unless stated otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean")


def _normalize_rows(r: Tensor, eps: float, scale: bool) -> Tensor:
    """(r − mean) / (std + eps) along the last dim; rows that are constant (or of size 1) become zeros."""
    r = r if r.is_floating_point() else r.float()
    if r.shape[-1] < 2:
        return torch.zeros_like(r)
    centered = r - r.mean(dim=-1, keepdim=True)
    if scale:
        centered = centered / (r.std(dim=-1, keepdim=True) + eps)  # unbiased (N−1), as torch.std / verl
    constant = r.amax(dim=-1, keepdim=True) == r.amin(dim=-1, keepdim=True)
    return torch.where(constant, torch.zeros_like(centered), centered)


def group_advantages(
    rewards: Tensor | Sequence[Tensor], eps: float = 1e-6, scale: bool = True
) -> Tensor | list[Tensor]:
    """GRPO advantages: each reward relative to its own group, ``(r − mean) / (std + eps)``.

    ``rewards`` is ``[num_groups, G]`` or a list of 1-D tensors (groups of different sizes, e.g. when a
    group lost rollouts). The std is the *unbiased* one (divides by G − 1), which is ``torch.std``'s default
    and what verl's GRPO uses. A group whose rewards are all equal carries no signal and gets exactly zero
    advantages (not the ±tiny values floating-point noise would give), and so does a group of one.
    ``scale=False`` gives the mean-centred advantages of Dr. GRPO.
    """
    if isinstance(rewards, Tensor):
        if rewards.dim() != 2:
            raise ValueError(f"rewards must be [num_groups, G], got shape {tuple(rewards.shape)}")
        return _normalize_rows(rewards, eps, scale)
    out = []
    for i, row in enumerate(rewards):
        if not isinstance(row, Tensor) or row.dim() != 1:
            raise ValueError(f"group {i}: expected a 1-D tensor of rewards, got {type(row).__name__}")
        out.append(_normalize_rows(row, eps, scale))
    return out


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` where ``mask`` is set (over everything, or along ``dim``); 0 where nothing is set.

    Masked-out entries are excluded rather than multiplied by zero, so padding may hold inf/NaN.
    """
    keep = mask.bool()
    total = torch.where(keep, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / keep.sum().clamp(min=1).to(total.dtype)
    return total.sum(dim) / keep.sum(dim).clamp(min=1).to(total.dtype)


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π ‖ π_ref) from tokens sampled from π (Schulman, 2020).

    With d = log π_ref − log π: k3 = exp(d) − d − 1 ≥ 0, unbiased and low-variance. As in verl's
    ``low_var_kl``, d is clamped to [−20, 20] before the exponential and the estimate to [−10, 10] (i.e. at
    most 10), which keeps one wildly off-policy token from blowing up the loss.
    """
    d = (ref_logprobs.float() - logprobs.float()).clamp(min=-20.0, max=20.0)
    return (torch.exp(d) - d - 1.0).clamp(min=-10.0, max=10.0)


def _aggregate(
    values: Tensor, mask: Tensor, mode: str, num_tokens_total: float | None, num_seqs_total: float | None
) -> Tensor:
    """Reduce a ``[B, T]`` per-token matrix to a scalar the way the loss is aggregated."""
    keep = mask.bool()
    values = torch.where(keep, values, torch.zeros_like(values))
    if mode == "token-mean":
        denom = float(num_tokens_total) if num_tokens_total is not None else keep.sum().clamp(min=1)
        return values.sum() / denom
    if mode == "seq-mean-token-mean":
        per_seq = values.sum(-1) / keep.sum(-1).clamp(min=1).to(values.dtype)
        denom = float(num_seqs_total) if num_seqs_total is not None else max(values.shape[0], 1)
        return per_seq.sum() / denom
    raise ValueError(f"loss_agg must be one of {LOSS_AGG_MODES}, got {mode!r}")


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_ratio: float = 0.2,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    loss_agg: str = "token-mean",
    num_tokens_total: float | None = None,
    num_seqs_total: float | None = None,
    clip_ratio_high: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with per-sequence advantages, plus ``kl_coef`` × k3 KL to a reference policy.

    Shapes: ``logprobs``, ``old_logprobs``, ``mask`` (and ``ref_logprobs``) are ``[B, T]`` over response
    tokens; ``advantages`` is ``[B]`` (broadcast over each sequence's tokens) or ``[B, T]``. Per token:
    ``ratio = exp(logprobs − old_logprobs)`` (log-ratio clamped to ±20) and
    ``loss = max(−A·ratio, −A·clip(ratio, 1 − clip_ratio, 1 + clip_ratio_high))`` with
    ``clip_ratio_high`` defaulting to ``clip_ratio`` (set it higher for DAPO's clip-higher).

    Aggregation: ``token-mean`` divides the sum over every response token by the number of tokens;
    ``seq-mean-token-mean`` averages tokens within each sequence, then sequences. The KL term is aggregated
    the same way (under ``token-mean`` that is the token-mean of k3).

    Gradient accumulation: when a mini-batch is split into micro-batches, pass the whole mini-batch's
    normalizer — ``num_tokens_total`` (its number of response tokens, for ``token-mean``) or
    ``num_seqs_total`` (its number of sequences, for ``seq-mean-token-mean``) — and *sum* the micro-batch
    losses (call ``backward`` on each; do not divide by the number of micro-batches). The accumulated
    gradient then equals that of one call on the whole mini-batch, however unevenly tokens fall across
    micro-batches. Without them each call normalizes by its own tokens/sequences. Under data parallelism
    with gradient averaging, pass the per-rank totals.

    Metrics (floats, for logging): ``pg_loss``, ``kl`` (only when ``ref_logprobs`` is given), ``clip_frac``
    (share of tokens where the clipped branch is active), ``ratio_mean`` and ``ppo_kl`` (k1 estimate of
    KL(π_old ‖ π)), each aggregated with ``loss_agg`` over *this call's* tokens/sequences only, ignoring the
    totals. Averaging them over micro-batches therefore gives the mini-batch value (exactly when the
    micro-batches hold equal numbers of tokens), whatever normalizer the loss used.
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must all be [B, T]"
        )
    if ref_logprobs is not None and ref_logprobs.shape != logprobs.shape:
        raise ValueError(
            f"ref_logprobs {tuple(ref_logprobs.shape)} must match logprobs {tuple(logprobs.shape)}"
        )
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs")
    if loss_agg not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg must be one of {LOSS_AGG_MODES}, got {loss_agg!r}")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    if advantages.shape not in ((logprobs.shape[0], 1), logprobs.shape):
        raise ValueError(f"advantages {tuple(advantages.shape)} must be [B] or [B, T] for logprobs [B, T]")
    low, high = clip_ratio, clip_ratio if clip_ratio_high is None else clip_ratio_high

    def agg(values: Tensor) -> Tensor:
        return _aggregate(values, mask, loss_agg, num_tokens_total, num_seqs_total)

    def local(values: Tensor) -> float:
        return _aggregate(values.detach(), mask, loss_agg, None, None).item()

    log_ratio = (logprobs.float() - old_logprobs.float()).clamp(min=-20.0, max=20.0)
    ratio = torch.exp(log_ratio)
    adv = advantages.float()
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - low, 1.0 + high)
    pg_tokens = torch.maximum(unclipped, clipped)
    loss = agg(pg_tokens)
    metrics: dict[str, float] = {}
    if ref_logprobs is not None:
        kl_tokens = kl_k3(logprobs, ref_logprobs)
        loss = loss + kl_coef * agg(kl_tokens)
        metrics["kl"] = local(kl_tokens)
    with torch.no_grad():
        metrics["pg_loss"] = local(pg_tokens)
        metrics["clip_frac"] = local((clipped > unclipped).float())
        metrics["ratio_mean"] = local(ratio)
        metrics["ppo_kl"] = local(-log_ratio)
    return loss, metrics
