"""Teacher-forced forward passes over (prompt, response) sequences.

The loss needs per-token log-probabilities of the sampled response under the policy (with gradient), the
reference (without), and, for self-certainty and entropy, statistics of the full next-token distribution.
Prompts are left-padded and responses right-padded so every response starts at the same column and only
the response positions' logits are materialised (``logits_to_keep``), which is what keeps memory bounded
for long prompts and large vocabularies.

A GRPO batch holds G responses to each prompt, so by default each distinct prompt runs through the model
once and its keys and values are shared by its G responses (``share_prompts``): the same attention over
the same tokens, the gradient flowing into the shared prompt pass from every response. Where prompts are
long against responses (the micro-world: about 45 prompt and 25 response tokens) this halves the update.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch

from corewarding.rollout.types import Rollout


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    position_ids: torch.Tensor  # [B, P + R]
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R] float, 1 on real response tokens
    # the distinct prompts: ``prompt_rows[u]`` is a row holding prompt u, ``prompt_index[b]`` row b's prompt
    prompt_rows: torch.Tensor | None = None  # [U]
    prompt_index: torch.Tensor | None = None  # [B]

    @property
    def response_width(self) -> int:
        return self.response_ids.shape[1]

    @property
    def num_prompts(self) -> int:
        """Distinct prompts in the batch (every row counts as its own when they were not recorded)."""
        return self.input_ids.shape[0] if self.prompt_rows is None else self.prompt_rows.numel()

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(
            *(
                None if t is None else t.to(device)
                for t in (
                    self.input_ids,
                    self.attention_mask,
                    self.position_ids,
                    self.response_ids,
                    self.response_mask,
                    self.prompt_rows,
                    self.prompt_index,
                )
            )
        )


def pack(rollouts: list[Rollout], pad_token_id: int) -> PackedBatch:
    """Left-pad prompts and right-pad responses into one rectangular batch."""
    p = max(len(r.prompt_ids) for r in rollouts)
    w = max(max(len(r.response_ids) for r in rollouts), 1)
    b = len(rollouts)
    input_ids = torch.full((b, p + w), pad_token_id, dtype=torch.long)
    attention = torch.zeros((b, p + w), dtype=torch.long)
    response_mask = torch.zeros((b, w), dtype=torch.float32)
    for i, r in enumerate(rollouts):
        lp, lr = len(r.prompt_ids), len(r.response_ids)
        input_ids[i, p - lp : p] = torch.tensor(r.prompt_ids, dtype=torch.long)
        attention[i, p - lp : p] = 1
        if lr:
            input_ids[i, p : p + lr] = torch.tensor(r.response_ids, dtype=torch.long)
            attention[i, p : p + lr] = 1
            response_mask[i, :lr] = 1.0
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    first_row: dict[tuple[int, ...], int] = {}
    prompt_index = [first_row.setdefault(tuple(r.prompt_ids), len(first_row)) for r in rollouts]
    prompt_rows = [0] * len(first_row)
    for row, u in reversed(list(enumerate(prompt_index))):
        prompt_rows[u] = row
    return PackedBatch(
        input_ids,
        attention,
        position_ids,
        input_ids[:, p:].clone(),
        response_mask,
        torch.tensor(prompt_rows, dtype=torch.long),
        torch.tensor(prompt_index, dtype=torch.long),
    )


@dataclass
class ForwardOutput:
    logprobs: torch.Tensor  # [B, R]
    entropy: torch.Tensor | None = None  # [B, R], detached
    self_certainty: torch.Tensor | None = None  # [B, R], detached


def response_forward(
    model,
    batch: PackedBatch,
    temperature: float = 1.0,
    with_stats: bool = False,
    chunk_size: int = 1024,
    share_prompts: bool = True,
) -> ForwardOutput:
    """Log-probs of the response tokens (temperature-scaled like the sampler) and optional token statistics.

    ``share_prompts`` runs each distinct prompt once when the batch repeats prompts (see the module
    docstring). It needs a model that returns a ``DynamicCache`` and accepts one back, so callers turn it off
    under gradient checkpointing (no cache in training) and under DeepSpeed ZeRO-3.
    """
    pieces = None
    if share_prompts and batch.prompt_rows is not None and batch.num_prompts < batch.input_ids.shape[0]:
        pieces = _shared_prompt_logits(model, batch)
    if pieces is None:
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            logits_to_keep=batch.response_width + 1,
        )
        pieces = [out.logits[:, :-1, :]]  # position t predicts token t+1: the response tokens
    logprobs, entropy, certainty = [], [], []
    column = 0
    for logits in pieces:
        if temperature != 1.0:
            logits = logits / temperature
        targets = batch.response_ids[:, column : column + logits.shape[1]]
        column += logits.shape[1]
        logprobs.append(_token_logprobs(logits, targets, chunk_size))
        if with_stats:
            from corewarding.rewards.token_stats import token_entropy, token_self_certainty

            with torch.no_grad():
                detached = logits.detach()
                entropy.append(token_entropy(detached))
                certainty.append(token_self_certainty(detached))
    return ForwardOutput(
        logprobs=_cat(logprobs),
        entropy=_cat(entropy) if with_stats else None,
        self_certainty=_cat(certainty) if with_stats else None,
    )


def _cat(pieces: list[torch.Tensor]) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """gather − logsumexp, one slice of positions at a time in fp32: never a full fp32 log-softmax copy
    of [B, R, vocab], which for a 150k vocabulary and 3k-token responses is the largest tensor by far."""
    pieces = []
    for start in range(0, logits.shape[1], chunk_size):
        piece = logits[:, start : start + chunk_size].float()
        target = targets[:, start : start + chunk_size].unsqueeze(-1)
        pieces.append(piece.gather(-1, target).squeeze(-1) - torch.logsumexp(piece, dim=-1))
    return _cat(pieces)


def _shared_prompt_logits(model, batch: PackedBatch) -> list[torch.Tensor] | None:
    """The response logits in two pieces, ``[B, 1, V]`` then ``[B, R-1, V]``, each distinct prompt run once.

    Pass 1 runs the distinct prompts (left-padded to the common width, so every row of a prompt has the
    same prompt columns) and keeps the logits of their last position, which predict each response's first
    token. Its keys and values are then indexed out to every row, and pass 2 runs the response tokens on
    top at the positions they have in the full sequence. The pieces are never concatenated: a copy of
    ``[B, R, V]`` would be the largest tensor of the update. Returns None when the model gives no
    ``DynamicCache`` back (the caller then runs the full sequences).
    """
    width = batch.response_width
    prompt_width = batch.input_ids.shape[1] - width
    if width < 2 or prompt_width < 1:
        return None
    rows = batch.prompt_rows
    first = model(
        input_ids=batch.input_ids[rows, :prompt_width],
        attention_mask=batch.attention_mask[rows, :prompt_width],
        position_ids=batch.position_ids[rows, :prompt_width],
        use_cache=True,
        logits_to_keep=1,
    )
    cache = first.past_key_values
    if type(cache).__name__ != "DynamicCache":
        return None
    cache.reorder_cache(batch.prompt_index)  # [U] prompts -> [B] rows, a differentiable index_select
    second = model(
        input_ids=batch.input_ids[:, prompt_width:],
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids[:, prompt_width:],
        **{_cache_argument(model): cache},
        use_cache=True,
        logits_to_keep=torch.arange(width - 1, device=batch.input_ids.device),
    )
    return [first.logits.index_select(0, batch.prompt_index), second.logits]


def _cache_argument(model) -> str:
    """``cache`` where the model's forward takes it (recent transformers 5), else ``past_key_values``."""
    inner = getattr(model, "module", model)  # DDP wraps the model; FSDP2 and DeepSpeed keep its forward
    return _cache_argument_of(type(inner))


@functools.cache
def _cache_argument_of(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"
