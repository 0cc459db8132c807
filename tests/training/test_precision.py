"""fp32 master weights with bf16 compute: the policy actually trains at the paper's lr, and bf16 compute
reproduces fp32 log-probs closely; pure 16-bit storage is refused with a loud warning."""

from __future__ import annotations

import pytest
import torch

from corewarding.errors import ConfigError
from corewarding.models.loading import load_model_and_tokenizer
from corewarding.rollout.types import Rollout
from corewarding.training.logprobs import pack, response_forward
from corewarding.training.precision import autocast, compute_dtype, storage_dtype
from corewarding.training.trainer import Trainer


def _trainables(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _changed(before: dict[str, torch.Tensor], model) -> tuple[float, float]:
    """Fraction of all trainable elements that changed, and of the norm weights' elements."""
    after = dict(model.named_parameters())
    moved = total = norm_moved = norm_total = 0
    for name, old in before.items():
        diff = int((after[name].detach() != old).sum())
        moved, total = moved + diff, total + old.numel()
        if "norm" in name:
            norm_moved, norm_total = norm_moved + diff, norm_total + old.numel()
    return moved / total, norm_moved / norm_total


def _ten_steps(micro_config, tmp_path, dtype: str) -> tuple[float, float]:
    cfg = micro_config(
        "co_rewarding_i",
        tmp_path,
        f"lr3e-6-{dtype}",
        f"model.dtype={dtype}",
        "model.compute_dtype=bf16",
        "optim.lr=3e-6",
        "trainer.total_steps=10",
        "trainer.val_every=0",
        "trainer.save_every=0",
        "validation.before_training=false",
    )
    trainer = Trainer(cfg, progress=False)
    before = _trainables(trainer.policy)
    trainer.train()
    return _changed(before, trainer.policy)


@pytest.mark.slow
def test_ten_steps_at_the_papers_lr_move_fp32_masters_but_not_bf16_weights(micro_config, tmp_path):
    everything, norms = _ten_steps(micro_config, tmp_path, "float32")
    assert everything >= 0.99 and norms >= 0.99, (everything, norms)
    with pytest.warns(UserWarning, match="round away"):
        bf16_everything, bf16_norms = _ten_steps(micro_config, tmp_path, "bf16")
    assert bf16_everything < 0.5 and bf16_norms < 0.5, (bf16_everything, bf16_norms)


def test_bf16_compute_log_probs_match_fp32_within_tolerance(micro_setup):
    model, tokenizer = load_model_and_tokenizer(str(micro_setup.base_model), device="cpu", dtype="float32")
    model.eval()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    rollouts = [
        Rollout(
            prompt_ids=torch.randint(3, vocab, (int(p),), generator=g).tolist(),
            response_ids=torch.randint(3, vocab, (int(r),), generator=g).tolist(),
            text="",
            truncated=False,
            prompt_index=i,
        )
        for i, (p, r) in enumerate([(12, 30), (20, 7), (5, 44), (17, 21)])
    ]
    batch = pack(rollouts, tokenizer.pad_token_id)
    with torch.no_grad():
        exact = response_forward(model, batch).logprobs
        with autocast(torch.device("cpu"), torch.bfloat16, torch.float32):
            fast = response_forward(model, batch).logprobs
    assert fast.dtype == torch.float32  # log-softmax itself is always taken in fp32
    mask = batch.response_mask.bool()
    err = (fast - exact).abs()[mask]
    # the stated tolerance for bf16 compute, on random (mostly unlikely) tokens of this model: at most 0.25
    # nats on any token and 0.03 on average (measured: 0.124 and 0.0155 on a 2-core CPU)
    assert float(err.max()) < 0.25 and float(err.mean()) < 0.03, (float(err.max()), float(err.mean()))
    assert float(err.max()) > 0  # bf16 really was used


def test_dtype_resolution():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert storage_dtype("auto") == torch.float32 and storage_dtype("float32") == torch.float32
    assert compute_dtype("auto", cpu) == torch.float32
    assert compute_dtype("auto", cpu, launch_mixed_precision="bf16") == torch.bfloat16
    assert compute_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="loss scaling"):
        compute_dtype("fp16", gpu)
    with pytest.warns(UserWarning, match="barely trains"):
        assert storage_dtype("bf16") == torch.bfloat16
