"""Padded, batched teacher-forced log-probs equal those of each sequence run alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from corewarding.models.builtin import resolve_model_path
from corewarding.rollout.types import Rollout
from corewarding.training.logprobs import length_buckets, pack, response_forward


def _alone(model, r: Rollout, temperature: float) -> torch.Tensor:
    ids = torch.tensor([r.prompt_ids + r.response_ids])
    logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(r.response_ids)[:, None]).squeeze(-1)


def test_batched_logprobs_match_unpadded_forward():
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:tiny-qwen3")).eval()
    g = torch.Generator().manual_seed(0)
    rollouts = [
        Rollout(
            prompt_ids=torch.randint(5, 900, (lp,), generator=g).tolist(),
            response_ids=torch.randint(5, 900, (lr,), generator=g).tolist(),
            text="",
        )
        for lp, lr in [(7, 5), (12, 1), (3, 9), (9, 9)]
    ]
    batch = pack(rollouts, pad_token_id=0)
    assert batch.response_mask.sum().item() == 5 + 1 + 9 + 9
    with torch.no_grad():
        out = response_forward(model, batch, temperature=0.7, with_stats=True, chunk_size=4)
    for i, r in enumerate(rollouts):
        expected = _alone(model, r, 0.7)
        got = out.logprobs[i, : len(r.response_ids)]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert out.entropy is not None and out.entropy.shape == out.logprobs.shape
    assert (out.entropy[batch.response_mask.bool()] > 0).all()


def _grpo_like_rollouts(generator: torch.Generator, group: int) -> list[Rollout]:
    """Three prompts of different lengths, each with ``group`` responses of unequal lengths (some empty)."""
    rollouts = []
    for lp in (4, 11, 7):
        prompt = torch.randint(5, 900, (lp,), generator=generator).tolist()
        for k in range(group):
            lr = (6, 1, 9, 0, 3, 12, 2)[k % 7] + k // 7
            response = torch.randint(5, 900, (lr,), generator=generator).tolist()
            rollouts.append(Rollout(prompt_ids=prompt, response_ids=response, text=""))
    return rollouts


def test_length_buckets_split_sorted_rows_evenly():
    assert length_buckets([5, 1, 9]) == [[2, 0, 1]]  # too few rows for a second bucket
    lengths = [i % 10 for i in range(96)]
    buckets = length_buckets(lengths)
    assert len(buckets) == 3 and sorted(i for b in buckets for i in b) == list(range(96))
    assert min(lengths[i] for i in buckets[0]) >= max(lengths[i] for i in buckets[1])
    assert len(length_buckets([1] * 1000)) == 4


@pytest.mark.parametrize("group", [5, 24])  # 15 rows: one length bucket; 72 rows: two
def test_shared_prompt_forward_gives_the_full_forwards_logprobs_stats_and_gradients(group):
    """Each distinct prompt run once (its K/V shared by its responses, the responses in length buckets)
    is the same computation as the whole sequences."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:tiny-qwen3")).float()
    rollouts = _grpo_like_rollouts(torch.Generator().manual_seed(1), group)
    batch = pack(rollouts, pad_token_id=0)
    assert batch.num_prompts == 3 and batch.prompt_index.tolist() == [0] * group + [1] * group + [2] * group
    results = {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        out = response_forward(
            model, batch, temperature=0.7, with_stats=True, chunk_size=4, share_prompts=share
        )
        weights = torch.linspace(-1, 1, out.logprobs.numel()).view_as(out.logprobs)
        (out.logprobs * batch.response_mask * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[share] = (out, grads)
    (full, full_grads), (shared, shared_grads) = results[False], results[True]
    mask = batch.response_mask.bool()
    torch.testing.assert_close(shared.logprobs[mask], full.logprobs[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.entropy[mask], full.entropy[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.self_certainty[mask], full.self_certainty[mask], atol=1e-5, rtol=1e-5)
    assert shared_grads.keys() == full_grads.keys() and len(full_grads) > 10
    for name, g in full_grads.items():
        torch.testing.assert_close(shared_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)
    # and both are each sequence run alone
    for i, r in enumerate(rollouts):
        if r.response_ids:
            expected = _alone(model, r, 0.7).detach()
            torch.testing.assert_close(
                shared.logprobs[i, : len(r.response_ids)].detach(), expected, atol=1e-5, rtol=1e-5
            )
