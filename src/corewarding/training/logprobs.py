"""Teacher-forced forward passes over (prompt, response) sequences.

The loss needs per-token log-probabilities of the sampled response under the policy (with gradient), the
reference (without), and, for self-certainty and entropy, statistics of the full next-token distribution.
Prompts are left-padded and responses right-padded so every response starts at the same column and only
the response positions' logits are materialised (``logits_to_keep``), which is what keeps memory bounded
for long prompts and large vocabularies.
"""

from __future__ import annotations

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

    @property
    def response_width(self) -> int:
        return self.response_ids.shape[1]

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(
            *(
                t.to(device)
                for t in (
                    self.input_ids,
                    self.attention_mask,
                    self.position_ids,
                    self.response_ids,
                    self.response_mask,
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
    return PackedBatch(input_ids, attention, position_ids, input_ids[:, p:].clone(), response_mask)


@dataclass
class ForwardOutput:
    logprobs: torch.Tensor  # [B, R]
    entropy: torch.Tensor | None = None  # [B, R], detached
    self_certainty: torch.Tensor | None = None  # [B, R], detached


def response_forward(
    model, batch: PackedBatch, temperature: float = 1.0, with_stats: bool = False, chunk_size: int = 1024
) -> ForwardOutput:
    """Log-probs of the response tokens (temperature-scaled like the sampler) and optional token statistics."""
    from corewarding.rewards.token_stats import token_entropy, token_self_certainty

    width = batch.response_width
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=width + 1,
    )
    logits = out.logits[:, :-1, :]  # position t predicts token t+1: the response tokens
    if temperature != 1.0:
        logits = logits / temperature
    # gather − logsumexp, one slice of positions at a time in fp32: never a full fp32 log-softmax copy
    # of [B, R, vocab], which for a 150k vocabulary and 3k-token responses is the largest tensor by far
    pieces = []
    for start in range(0, width, chunk_size):
        piece = logits[:, start : start + chunk_size].float()
        target = batch.response_ids[:, start : start + chunk_size].unsqueeze(-1)
        pieces.append(piece.gather(-1, target).squeeze(-1) - torch.logsumexp(piece, dim=-1))
    logprobs = torch.cat(pieces, dim=1)
    entropy = certainty = None
    if with_stats:
        with torch.no_grad():
            detached = logits.detach()
            entropy = token_entropy(detached)
            certainty = token_self_certainty(detached)
    return ForwardOutput(logprobs=logprobs, entropy=entropy, self_certainty=certainty)
