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

from dataclasses import dataclass

import torch

from corewarding.models.cache import cache_keyword, is_plain_cache, output_cache
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
    under gradient checkpointing (no cache in training).
    """

    def per_token(logits: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
        if temperature != 1.0:
            logits = logits / temperature
        out = [_token_logprobs(logits, targets, chunk_size)]
        if with_stats:
            from corewarding.rewards.token_stats import token_entropy, token_self_certainty

            with torch.no_grad():
                detached = logits.detach()
                out += [token_entropy(detached), token_self_certainty(detached)]
        return out

    shared = None
    if share_prompts and batch.prompt_rows is not None and batch.num_prompts < batch.input_ids.shape[0]:
        shared = _shared_prompt_logits(model, batch)
    if shared is None:
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            logits_to_keep=batch.response_width + 1,
        )
        # position t predicts token t+1: the response tokens
        values = per_token(out.logits[:, :-1, :], batch.response_ids)
    else:
        first_logits, buckets = shared
        first = per_token(first_logits, batch.response_ids[:, :1])
        rest_width = batch.response_width - 1
        by_bucket = []
        for rows, logits in buckets:
            targets = batch.response_ids[rows, 1 : 1 + logits.shape[1]]
            padding = (0, rest_width - logits.shape[1])
            by_bucket.append([torch.nn.functional.pad(v, padding) for v in per_token(logits, targets)])
        order = torch.cat([rows for rows, _ in buckets])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        values = [
            torch.cat([head, torch.cat(parts).index_select(0, inverse)], dim=1)
            for head, *parts in zip(first, *by_bucket, strict=True)
        ]
    return ForwardOutput(
        logprobs=values[0],
        entropy=values[1] if with_stats else None,
        self_certainty=values[2] if with_stats else None,
    )


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """gather − logsumexp, one slice of positions at a time in fp32: never a full fp32 log-softmax copy
    of [B, R, vocab], which for a 150k vocabulary and 3k-token responses is the largest tensor by far."""
    pieces = []
    for start in range(0, logits.shape[1], chunk_size):
        piece = logits[:, start : start + chunk_size].float()
        target = targets[:, start : start + chunk_size].unsqueeze(-1)
        pieces.append(piece.gather(-1, target).squeeze(-1) - torch.logsumexp(piece, dim=-1))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


# rows per length bucket in the response pass: below this, another bucket costs more than its padding
MIN_BUCKET_ROWS = 32


def length_buckets(lengths: list[int], max_buckets: int = 4) -> list[list[int]]:
    """Rows grouped by response length (longest first), so each group pads only to its own longest.

    Responses of one batch differ a lot in length (micro-world: 20 to 64 tokens around a mean of 33);
    padding all of them to the longest wastes a quarter of the response pass. Equal-sized groups of the
    length-sorted rows, at most ``max_buckets`` of them and none under ``MIN_BUCKET_ROWS`` rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    k = max(1, min(max_buckets, len(order) // MIN_BUCKET_ROWS))
    size = -(-len(order) // k)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _shared_prompt_logits(
    model, batch: PackedBatch
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None:
    """Response logits with each distinct prompt run once: ``[B, 1, V]`` for every row's first response
    token, then ``(rows, [len(rows), w - 1, V])`` for each length bucket of rows (``length_buckets``).

    Pass 1 runs the distinct prompts (left-padded to the common width, so every row of a prompt has the
    same prompt columns) and keeps the logits of their last position, which predict each response's first
    token. Its keys and values are then indexed out to the rows of a bucket, and pass 2 runs that bucket's
    response tokens on top, at the positions they have in the full sequence, cut to the bucket's longest
    response. The pieces are never concatenated into one ``[B, R, V]`` tensor, which would be the largest
    tensor of the update. Returns None when the model's cache is not a plain ``DynamicCache`` (sliding
    windows, hybrid or quantized layers): the caller then runs the full sequences.
    """
    width = batch.response_width
    prompt_width = batch.input_ids.shape[1] - width
    if width < 2 or prompt_width < 1:
        return None
    first = model(
        input_ids=batch.input_ids[batch.prompt_rows, :prompt_width],
        attention_mask=batch.attention_mask[batch.prompt_rows, :prompt_width],
        position_ids=batch.position_ids[batch.prompt_rows, :prompt_width],
        use_cache=True,
        logits_to_keep=1,
    )
    cache = output_cache(first)
    if not is_plain_cache(cache):
        return None
    layers = cache.layers
    prompt_kv = [(layer.keys, layer.values) for layer in layers]
    lengths = batch.response_mask.sum(dim=1).long().tolist()
    device = batch.input_ids.device
    buckets = []
    for rows_list in length_buckets(lengths):
        rows = torch.tensor(rows_list, dtype=torch.long, device=device)
        w = max(2, max(lengths[i] for i in rows_list))
        prompts = batch.prompt_index.index_select(0, rows)
        # the same cache object serves every bucket: each pass appends to what it was given, and autograd
        # keeps the tensors a pass used, so resetting the layers afterwards changes nothing computed
        for layer, (keys, values) in zip(layers, prompt_kv, strict=True):
            layer.keys, layer.values = keys.index_select(0, prompts), values.index_select(0, prompts)
        second = model(
            input_ids=batch.input_ids[rows, prompt_width : prompt_width + w],
            attention_mask=batch.attention_mask[rows, : prompt_width + w],
            position_ids=batch.position_ids[rows, prompt_width : prompt_width + w],
            **{cache_keyword(model): cache},
            use_cache=True,
            logits_to_keep=torch.arange(w - 1, device=device),
        )
        buckets.append((rows, second.logits))
    return first.logits.index_select(0, batch.prompt_index), buckets
