"""Padded, batched teacher-forced log-probs equal those of each sequence run alone."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from corewarding.models.builtin import resolve_model_path
from corewarding.rollout.types import Rollout
from corewarding.training.logprobs import pack, response_forward


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
