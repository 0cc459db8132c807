"""Every method end to end on the tiny config (2 steps on CPU): metrics written, the policy moved by its
updates wherever the rewards gave it something to learn, the teacher changed only for Co-rewarding-II with
EMA on.

Weight decay is off, so a weight that moved was moved by a gradient (with it on, AdamW shrinks every weight
whatever the loss, and a trainer whose loss is multiplied by 0 still "changed the parameters"). The tiny
model is random: it never boxes an answer, so the voting and ground-truth methods get constant rewards and
no signal (their steps are checked with known rewards in test_trainer_step.py); self-certainty and entropy
rewards vary even for a random model, so those runs must show a real update.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corewarding.config import load_config
from corewarding.models.builtin import resolve_model_path
from corewarding.training.trainer import train

CASES = {
    "gt": [],
    "majority_vote": [],
    "majority_vote_rephrased": ["method=majority_vote", "data.view=rephrased"],
    "self_certainty": [],
    "entropy": [],
    "co_rewarding_i": [],
    "co_rewarding_ii": [],
    "co_rewarding_ii_frozen": ["method=co_rewarding_ii", "teacher.ema=false"],
}


def _weights(directory) -> dict[str, torch.Tensor]:
    state = {}
    for f in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_two_steps(case, tmp_path):
    overrides = CASES[case] or [f"method={case}"]
    cfg = load_config(
        "configs/tiny-cpu.yaml",
        [
            *overrides,
            "total_steps=2",
            f"output_dir={tmp_path}",
            f"trainer.run_name={case}",
            "save_every=2",
            "optim.weight_decay=0",
        ],
    )
    result = train(cfg, progress=False)
    run = tmp_path / case
    assert result.run_dir == run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == [0, 1, 2], steps  # validation before training, then two steps
    for key in (
        "reward/mean",
        "pg_loss",
        "grad_norm",
        "lr",
        "response_length/mean",
        "time/generation",
        "rollout/accuracy",
        "token_entropy",
        "self_certainty",
        "throughput/rollout_tokens_per_s",
    ):
        assert key in rows[1], f"{key} missing from step metrics: {sorted(rows[1])}"
    assert "val/avg@2" in rows[0] and "val/avg@2" in rows[2]
    if cfg.method in ("majority_vote", "co_rewarding_i", "co_rewarding_ii"):
        assert {"pseudo_label/accuracy", "pseudo_label/empty_frac", "pseudo_label/agreement"} <= rows[
            1
        ].keys()
    if cfg.method == "co_rewarding_i":
        assert "reward/original" in rows[1] and "reward/rephrased" in rows[1]
    if cfg.grpo.kl_coef > 0:
        assert "kl" in rows[1]
    # a step has a signal when some group's rewards differ
    signal = any(r["reward/zero_std_frac"] < 1 for r in rows[1:])
    if cfg.method in ("self_certainty", "entropy"):
        # a random model still gives these rewards a spread, so the policy gradient itself is non-zero
        assert rows[1]["grad_norm"] > 0 and rows[1]["reward/zero_std_frac"] < 1
        assert signal

    base = _weights(Path(resolve_model_path("builtin:tiny-qwen3")))
    ckpt = run / "checkpoint-2"
    assert (ckpt / "COMPLETE").exists() and (ckpt / "config.json").exists()
    # the training state keeps the fp32 weights; the Hugging Face export beside it is their bf16 rounding
    policy = load_file(str(ckpt / "state" / "model.safetensors"))
    moved = _max_diff(base, policy)
    if signal:
        # AdamW's step moves a weight by about ±lr where its gradient is well above eps (1e-8); float noise
        # in a signal-free step (gradient norms ~1e-10, measured) moves weights by ~lr/100 at most. Measured
        # here: 1.5e-4 = lr + lr/2 (the cosine schedule halves lr at step 2)
        assert moved > cfg.optim.lr / 2, (
            f"the policy hardly moved ({moved:.3g}): no update reached the weights"
        )
    export = _weights(ckpt)
    assert all(v.dtype == torch.bfloat16 for v in export.values())
    assert all(torch.equal(export[k], policy[k].to(torch.bfloat16)) for k in export)
    teacher_dir = ckpt / "teacher"
    if cfg.method == "co_rewarding_ii":
        teacher = load_file(str(ckpt / "state" / "teacher.safetensors"))
        teacher_moved = _max_diff(base, teacher)
        assert "teacher/ema_a" in rows[1]
        if cfg.teacher.ema:
            if signal:  # it follows the policy, a = 0.01 of the way per step
                assert 0 < teacher_moved < moved, "EMA teacher did not move"
        else:
            assert teacher_moved == 0, "frozen teacher moved"
        assert (teacher_dir / "config.json").exists()
    else:
        assert not teacher_dir.exists()
    assert list((run / "rollouts").glob("step-*.jsonl")) and list((run / "plots").glob("*.png"))
