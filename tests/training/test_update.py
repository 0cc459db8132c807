"""The small pieces of ``training/update.py`` on their own: the flattened per-group advantages, padding of
sampled log-probs, masked token means, gradient clipping and the divergence stop with its message.
test_trainer_step.py checks the whole step they make up; these are fast and exact."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from corewarding.config import load_config
from corewarding.training import checkpoint as ckpt
from corewarding.training.logprobs import PackedBatch
from corewarding.training.update import (
    TrainingDivergedError,
    clip_gradients,
    masked_means,
    padded,
    step_advantages,
    stop_if_diverged,
)

TINY = "configs/tiny-cpu.yaml"


# ------------------------------------------------------------------------------------------ advantages
def test_step_advantages_normalise_each_group_alone_and_flatten_in_order():
    rewards = [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0], [0.0, 1.0, 1.0]]
    got = step_advantages(rewards, eps=1e-6)
    assert len(got) == 9 and all(isinstance(a, float) for a in got)
    # group 1: mean 0.5, unbiased std 0.5774; group 2: constant, so 0; group 3: mean 2/3, std 0.5774
    s = math.sqrt(1 / 3)
    expected = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0, 0.0, -(2 / 3) / s, (1 / 3) / s, (1 / 3) / s]
    assert got == pytest.approx(expected, rel=1e-5)
    # the whole-batch normalisation would give the constant group non-zero advantages
    assert got[4:6] == [0.0, 0.0]


def test_integer_rewards_are_normalised_like_float_ones():
    """A plug-in may reward with ints (``_validate`` accepts them): the advantages are floats all the same."""
    assert step_advantages([[1, 0, 0, 1]], eps=1e-6) == step_advantages([[1.0, 0.0, 0.0, 1.0]], eps=1e-6)


def test_step_advantages_pass_eps_through():
    # one reward of 1 among three: std 0.5774, so eps = 1 shrinks the advantages by 1/(1 + 1/0.5774)
    plain, damped = step_advantages([[1.0, 0.0, 0.0]], 1e-6), step_advantages([[1.0, 0.0, 0.0]], 1.0)
    s = math.sqrt(1 / 3)
    assert damped == pytest.approx([a * s / (s + 1.0) for a in plain], rel=1e-5)


# ----------------------------------------------------------------------------------- padding and means
def test_padded_fills_rows_from_the_left_with_zeros_after():
    like = torch.full((3, 4), 7.0, dtype=torch.float64)
    rows = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0, 6.0]), torch.tensor([])]
    out = padded(rows, like)
    assert out.dtype == torch.float64 and out.shape == (3, 4)
    assert out.tolist() == [[1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 0.0, 0.0]]
    assert like.eq(7.0).all()  # ``like`` gives the shape only


def _batch(mask: list[list[float]]) -> PackedBatch:
    m = torch.tensor(mask)
    ids = torch.zeros_like(m, dtype=torch.long)
    return PackedBatch(input_ids=ids, attention_mask=ids, position_ids=ids, response_ids=ids, response_mask=m)


def test_masked_means_average_only_real_response_tokens():
    batch = _batch([[1, 1, 0], [1, 0, 0]])
    a = torch.tensor([[1.0, 2.0, 100.0], [6.0, 100.0, 100.0]])
    b = torch.tensor([[0.0, 0.0, 5.0], [3.0, 9.0, 9.0]])
    assert masked_means(batch, a=a, b=b) == {"a": pytest.approx(3.0), "b": pytest.approx(1.0)}
    # no real token: 0, not a division by zero; one real token: its value
    assert masked_means(_batch([[0, 0]]), a=torch.tensor([[4.0, 4.0]])) == {"a": 0.0}
    assert masked_means(_batch([[0, 1]]), a=torch.tensor([[4.0, 3.0]])) == {"a": 3.0}


# ----------------------------------------------------------------------------------------- clipping
def _trainer(tmp_path, *overrides: str, processes: int = 1, others: tuple[float, float] = (0.0, 0.0)):
    class Accelerator:
        device = torch.device("cpu")
        num_processes = processes

        def reduce(self, tensor, reduction):
            assert reduction == "sum"
            return tensor + torch.tensor(others)

        def clip_grad_norm_(self, parameters, max_norm):
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    cfg = load_config(TINY, list(overrides))
    return SimpleNamespace(accelerator=Accelerator(), cfg=cfg, run_dir=tmp_path, strategy="ddp")


def test_clip_gradients_returns_the_norm_before_clipping_and_clips_to_grad_clip(tmp_path):
    trainer = _trainer(tmp_path, "optim.grad_clip=1.0")
    trainer.model = nn.Linear(2, 1, bias=False)
    trainer.model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert clip_gradients(trainer) == pytest.approx(5.0)
    assert trainer.model.weight.grad.tolist() == [pytest.approx([0.6, 0.8], rel=1e-5)]
    trainer.model.weight.grad = torch.tensor([[0.3, 0.4]])
    assert clip_gradients(trainer) == pytest.approx(0.5)
    assert trainer.model.weight.grad.tolist() == [pytest.approx([0.3, 0.4])]  # under the limit: unchanged


def test_no_norm_from_the_accelerator_is_passed_on_as_none(tmp_path):
    """DeepSpeed clips inside its own step and has no norm to report before its first one."""
    trainer = _trainer(tmp_path)
    trainer.accelerator.clip_grad_norm_ = lambda parameters, max_norm: None
    trainer.model = nn.Linear(2, 1, bias=False)
    assert clip_gradients(trainer) is None


def test_under_fsdp2_torch_clips_without_the_accelerator(tmp_path):
    """FSDP2 parameters are DTensor shards that accelerate's clipping does not handle: torch clips them (the
    sharded run itself is tests/training/test_sharded_training.py); on plain tensors the result is the same."""
    trainer = _trainer(tmp_path, "optim.grad_clip=2.0")
    trainer.strategy = "fsdp2"
    trainer.accelerator.clip_grad_norm_ = None  # not used on this path
    trainer.model = nn.Linear(2, 1, bias=False)
    trainer.model.weight.grad = torch.tensor([[6.0, 8.0]])
    norm = clip_gradients(trainer)
    assert isinstance(norm, float) and norm == pytest.approx(10.0)
    assert trainer.model.weight.grad.tolist() == [pytest.approx([1.2, 1.6], rel=1e-5)]


# ------------------------------------------------------------------------------------- the divergence stop
ADVICE = (
    "Lower optim.lr (now 1e-05), keep optim.grad_clip on (now 1) or raise the warm-up "
    "(optim.warmup_ratio=0.1), then go on from the last checkpoint with resume=true "
    "(trainer.allow_config_changes=true lets it take the new values)"
)
SETTINGS = ["optim.lr=1e-5", "optim.grad_clip=1.0", "optim.warmup_ratio=0.1"]


def test_finite_values_pass(tmp_path):
    trainer = _trainer(tmp_path, *SETTINGS)
    assert stop_if_diverged(trainer, (0, 0), None, 3.5) is None
    assert stop_if_diverged(trainer, (0, 0), None, None) is None  # ZeRO-3 before its first norm


@pytest.mark.parametrize("norm", [math.inf, -math.inf, math.nan])
def test_a_non_finite_gradient_norm_stops_with_its_value(tmp_path, norm):
    trainer = _trainer(tmp_path, *SETTINGS)
    with pytest.raises(TrainingDivergedError) as err:
        stop_if_diverged(trainer, (4, 0), None, norm)
    assert str(err.value) == (
        f"training diverged at step 5: the gradient norm is {norm}; the run stopped before the optimizer "
        f"step, so no weights were changed or saved, and no checkpoint was written yet. {ADVICE}"
    )


def test_a_bad_loss_names_its_value_the_update_and_the_last_checkpoint(tmp_path):
    for step in (2, 3, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / ckpt.COMPLETE).write_text("{}")
    (tmp_path / "checkpoint-12").mkdir()  # unfinished: not the last intact one
    trainer = _trainer(tmp_path, *SETTINGS, "grpo.updates_per_step=2")
    with pytest.raises(TrainingDivergedError) as err:
        stop_if_diverged(trainer, (11, 1), float("nan"), 2.0)  # the loss wins over a finite norm
    assert str(err.value) == (
        "training diverged at step 12 (update 2 of 2): the loss is nan; the run stopped before the optimizer "
        f"step, so no weights were changed or saved, and the last checkpoint, checkpoint-10, is intact. {ADVICE}"
    )


def test_under_zero3_the_message_says_the_update_was_applied(tmp_path):
    trainer = _trainer(tmp_path, *SETTINGS)
    with pytest.raises(TrainingDivergedError) as err:
        stop_if_diverged(trainer, (0, 0), None, math.inf, applied=True)
    assert str(err.value) == (
        "training diverged at step 1: the gradient norm is inf; DeepSpeed applied this update inside its "
        f"backward, but nothing after it was saved, and no checkpoint was written yet. {ADVICE}"
    )


def test_every_process_stops_when_another_saw_a_bad_loss(tmp_path):
    calm = _trainer(tmp_path, *SETTINGS, processes=2, others=(1.0, 0.0))
    with pytest.raises(
        TrainingDivergedError, match=r"^training diverged at step 3: the loss is not finite on "
    ):
        stop_if_diverged(calm, (2, 0), None, 1.0)
    norm_elsewhere = _trainer(tmp_path, *SETTINGS, processes=2, others=(0.0, 1.0))
    with pytest.raises(TrainingDivergedError, match=r"^training diverged at step 3: the gradient norm is "):
        stop_if_diverged(norm_elsewhere, (2, 0), None, 1.0)
    # one process: nothing is reduced, its own flags decide
    alone = _trainer(tmp_path, *SETTINGS, processes=1, others=(1.0, 1.0))
    assert stop_if_diverged(alone, (2, 0), None, 1.0) is None


# ------------------------------------------------------------------------------ the update's orchestration
class Recorder:
    """What ``update_policy`` asks of the trainer and its accelerator, in order. The loss of a micro-batch
    is ``w · Σ advantages`` for a one-weight model, so every gradient and update is known by hand."""

    def __init__(self, tmp_path, *overrides: str, processes: int = 1, strategy: str = "ddp", plan=None):
        self.calls: list[tuple] = []
        self.cfg = load_config(TINY, list(overrides))
        self.run_dir = tmp_path
        self.strategy = strategy
        self._micro_batches_plan = plan
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.fill_(1.0)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0 / (step + 1))
        self.bad = {}  # micro-batch (as a tuple) -> the loss it returns instead
        self.norms: list[float | None] | None = None
        self.inputs: list[tuple] = []  # (rollouts, old) as each micro-batch's loss received them
        recorder = self

        class Accelerator:
            device = torch.device("cpu")
            num_processes = processes

            def reduce(self, tensor, reduction):
                assert reduction == "sum"
                return tensor * processes  # every process holds as many tokens, and the same flags

            def no_sync(self, model):
                assert model is recorder.model
                recorder.calls.append(("no_sync",))
                return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)

            def backward(self, loss):
                recorder.calls.append(("backward", round(float(loss.detach()), 6)))
                loss.backward()

        self.accelerator = Accelerator()

    def _micro_batch_loss(self, mb, rollouts, advantages, old, norm):
        self.calls.append(("loss", tuple(mb), dict(norm)))
        self.inputs.append((rollouts, old))
        loss = self.model.weight.sum() * sum(advantages[i] for i in mb)
        if tuple(mb) in self.bad:
            loss = loss * self.bad[tuple(mb)]
        return loss, {"size": float(len(mb))}

    def _clip_gradients(self):
        grad = None if self.model.weight.grad is None else float(self.model.weight.grad.norm())
        self.calls.append(("clip", grad))
        return self.norms.pop(0) if self.norms else grad

    def _weights_changed(self):
        self.calls.append(("changed", float(self.model.weight.detach())))


def _rollouts(lengths: list[int]) -> list:
    from corewarding.rollout.types import Rollout

    return [Rollout(prompt_ids=[1], response_ids=[7] * n, text="") for n in lengths]


def test_update_policy_splits_updates_and_micro_batches_and_steps_once_per_update(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path, "grpo.updates_per_step=2", "optim.micro_batch_size=2", processes=2)
    advantages = [1.0, 2.0, 3.0, -1.0, -2.0, 0.5]
    stats = update_policy(trainer, _rollouts([1, 2, 3, 4, 5, 6]), advantages, None, step=0)
    # update 1: rollouts 0-2 (6 tokens here, 12 over both processes), micro-batches [0, 1] and [2]; the
    # loss is scaled by the number of processes (DDP averages gradients); DDP syncs on the last one only
    norm1 = {"num_tokens_total": 12.0, "num_seqs_total": 6}
    norm2 = {"num_tokens_total": 30.0, "num_seqs_total": 6}
    assert trainer.calls == [
        ("no_sync",),
        ("loss", (0, 1), norm1),
        ("backward", 6.0),  # w = 1: (1 + 2) x 2 processes
        ("loss", (2,), norm1),
        ("backward", 6.0),
        ("clip", 12.0),  # d/dw of 2w(1 + 2) + 2w·3
        ("changed", pytest.approx(1.0 - 0.1 * 12.0)),  # w = -0.2
        ("no_sync",),
        ("loss", (3, 4), norm2),
        ("backward", pytest.approx(-0.2 * -3.0 * 2)),
        ("loss", (5,), norm2),
        ("backward", pytest.approx(-0.2 * 0.5 * 2)),
        ("clip", pytest.approx(5.0)),  # |2(-3) + 2(0.5)|: the gradients of update 1 were zeroed
        ("changed", pytest.approx(-0.2 + 0.05 * 5.0)),  # the schedule halved the lr
    ]
    assert stats == {"size": 1.5, "grad_norm": pytest.approx(8.5), "lr": pytest.approx(0.075)}
    assert trainer.model.weight.grad is None  # zeroed (set to None) after each step


def test_other_strategies_never_skip_the_gradient_sync(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path, "optim.micro_batch_size=1", strategy="fsdp2")
    update_policy(trainer, _rollouts([1, 1, 1]), [1.0, 1.0, 1.0], None, step=0)
    assert ("no_sync",) not in trainer.calls
    assert [c[0] for c in trainer.calls].count("backward") == 3


def test_a_non_finite_loss_stops_before_the_optimizer_step(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path, "optim.micro_batch_size=1")
    trainer.bad[(1,)] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"^training diverged at step 4: the loss is inf;"):
        update_policy(trainer, _rollouts([1, 1, 1]), [1.0, 1.0, 1.0], None, step=3)
    assert float(trainer.model.weight.detach()) == 1.0 and "changed" not in [c[0] for c in trainer.calls]
    # every micro-batch ran first (its gradient is discarded with the run)
    assert [c[1] for c in trainer.calls if c[0] == "loss"] == [(0,), (1,), (2,)]


def test_every_micro_batch_gets_the_steps_rollouts_and_sampled_log_probs(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path, "optim.micro_batch_size=1")
    rollouts, old = _rollouts([1, 2]), [{"logprobs": torch.zeros(1)}, {"logprobs": torch.zeros(2)}]
    update_policy(trainer, rollouts, [1.0, -1.0], old, step=0)
    assert len(trainer.inputs) == 2 and all(r is rollouts and o is old for r, o in trainer.inputs)


def test_a_non_finite_gradient_norm_stops_before_the_optimizer_step(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path)
    trainer.norms = [math.inf]
    with pytest.raises(TrainingDivergedError, match=r"the gradient norm is inf; the run stopped before the "):
        update_policy(trainer, _rollouts([2, 2]), [1.0, -1.0], None, step=0)
    assert float(trainer.model.weight.detach()) == 1.0


def test_a_missing_gradient_norm_is_logged_as_nan(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path)
    trainer.norms = [None]
    stats = update_policy(trainer, _rollouts([2, 2]), [1.0, -1.0], None, step=0)
    assert math.isnan(stats["grad_norm"])


class Plan:
    """DeepSpeed ZeRO-3's micro-batch plan: it does the backward (and steps inside the last one)."""

    def __init__(self, trainer: Recorder, per_update: int):
        self.trainer, self.micro_batches_per_update = trainer, per_update

    def backward(self, acc, loss, k):
        assert acc is self.trainer.accelerator
        self.trainer.calls.append(("plan.backward", k, round(float(loss.detach()), 6)))
        loss.backward()


def test_zero3_backs_through_its_plan_and_checks_the_losses_before_the_last_backward(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path, "optim.micro_batch_size=2", strategy="deepspeed")
    trainer._micro_batches_plan = Plan(trainer, 2)
    update_policy(trainer, _rollouts([1, 1, 1, 1]), [1.0, 2.0, 3.0, 4.0], None, step=0)
    assert [c for c in trainer.calls if c[0] in ("plan.backward", "backward", "no_sync")] == [
        ("plan.backward", 0, 3.0),
        ("plan.backward", 1, 7.0),
    ]

    # a bad loss in the first micro-batch stops the run before the last backward, where ZeRO-3 steps
    trainer = Recorder(tmp_path, "optim.micro_batch_size=2", strategy="deepspeed")
    trainer._micro_batches_plan = Plan(trainer, 2)
    trainer.bad[(0, 1)] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"the loss is nan; the run stopped before the optimizer"):
        update_policy(trainer, _rollouts([1, 1, 1, 1]), [1.0, 2.0, 3.0, 4.0], None, step=0)
    assert [c[:2] for c in trainer.calls if c[0] == "plan.backward"] == [("plan.backward", 0)]

    # its gradient norm comes after the update it applied: the message says so
    trainer = Recorder(tmp_path, "optim.micro_batch_size=4", strategy="deepspeed")
    trainer._micro_batches_plan = Plan(trainer, 1)
    trainer.norms = [math.inf]
    with pytest.raises(
        TrainingDivergedError, match=r"the gradient norm is inf; DeepSpeed applied this update"
    ):
        update_policy(trainer, _rollouts([1, 1, 1, 1]), [1.0, 2.0, 3.0, 4.0], None, step=0)


def test_zero3_refuses_a_micro_batch_count_it_was_not_set_up_for(tmp_path):
    from corewarding.training.update import update_policy

    trainer = Recorder(tmp_path, "optim.micro_batch_size=1", strategy="deepspeed")
    trainer._micro_batches_plan = Plan(trainer, 2)
    with pytest.raises(
        RuntimeError, match=r"^3 micro-batches in this update, but DeepSpeed was set up for 2$"
    ):
        update_policy(trainer, _rollouts([1, 1, 1]), [1.0, 1.0, 1.0], None, step=0)
    assert trainer.calls == []


# ------------------------------------------------------------------------------- one micro-batch's loss
@pytest.fixture(scope="module")
def tiny_pair():
    """The built-in tiny Qwen3 (random) as policy, and a perturbed copy as the KL reference."""
    import copy

    from corewarding.models.loading import load_model_and_tokenizer

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = load_model_and_tokenizer("builtin:tiny-qwen3", device="cpu", dtype="float32")
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    yield model, reference, tokenizer.pad_token_id
    torch.set_num_threads(old)


def _loss_trainer(tiny_pair, *overrides: str, reference: bool = True, token_stats: bool = False):
    import contextlib

    model, ref, pad_id = tiny_pair

    @contextlib.contextmanager
    def reference_block():
        yield ref if reference else None

    return SimpleNamespace(
        cfg=load_config(TINY, list(overrides)),
        accelerator=SimpleNamespace(device=torch.device("cpu")),
        pad_id=pad_id,
        model=model,
        _compute=contextlib.nullcontext,
        _reference=reference_block,
        _share_prompts=True,
        method=SimpleNamespace(needs_token_stats=token_stats),
    )


def _mb_rollouts() -> list:
    from corewarding.rollout.types import Rollout

    return [
        Rollout(prompt_ids=[5, 17, 33], response_ids=[41, 8, 99, 3], text=""),
        Rollout(prompt_ids=[5, 17, 33], response_ids=[12, 13], text=""),
        Rollout(prompt_ids=[7, 21], response_ids=[50, 51, 52], text=""),
    ]


def test_micro_batch_loss_is_the_grpo_loss_of_its_rollouts_with_the_configured_settings(tiny_pair):
    from corewarding.training.grpo import policy_loss
    from corewarding.training.logprobs import pack, response_forward
    from corewarding.training.update import micro_batch_loss

    settings = ["rollout.temperature=0.7", "grpo.clip_ratio=0.05", "grpo.kl_coef=0.3"]
    trainer = _loss_trainer(tiny_pair, *settings, "grpo.loss_agg=seq-mean-token-mean")
    model, ref, pad_id = tiny_pair
    rollouts, advantages = _mb_rollouts(), [0.5, -7.0, -1.5]
    mb = [2, 0]  # in this order: row 0 of the batch is rollout 2
    # the sampler's log-probs, off by ±0.1 per token so that ratios differ from 1 and clipping bites
    with torch.no_grad():
        now = response_forward(model, pack([rollouts[i] for i in range(3)], pad_id), temperature=0.7).logprobs
    old = [{"logprobs": now[i, : len(r.response_ids)] + 0.1 * (-1) ** i} for i, r in enumerate(rollouts)]
    norm = {"num_tokens_total": 9.0, "num_seqs_total": 5}
    model.zero_grad()
    loss, stats = micro_batch_loss(trainer, mb, rollouts, advantages, old, norm)

    batch = pack([rollouts[2], rollouts[0]], pad_id)
    with torch.no_grad():
        lp = response_forward(model, batch, temperature=0.7).logprobs
        ref_lp = response_forward(ref, batch, temperature=0.7).logprobs
    old_lp = torch.zeros_like(lp)
    old_lp[0, :3], old_lp[1, :4] = old[2]["logprobs"], old[0]["logprobs"]
    expected, expected_stats = policy_loss(
        lp, old_lp, torch.tensor([-1.5, 0.5]), batch.response_mask, clip_ratio=0.05,
        ref_logprobs=ref_lp, kl_coef=0.3, loss_agg="seq-mean-token-mean", **norm,
    )  # fmt: skip
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert stats.keys() == {*expected_stats, "token_entropy", "self_certainty"}
    for key, value in expected_stats.items():
        assert stats[key] == pytest.approx(float(value), rel=1e-5, abs=1e-7), key
    assert 0 < stats["clip_frac"] < 1 and stats["kl"] > 0
    # the gradient reaches the policy only
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in ref.parameters())
    model.zero_grad()


def test_micro_batch_token_statistics_are_the_masked_means_of_the_forward(tiny_pair):
    from corewarding.rewards.token_stats import token_entropy, token_self_certainty
    from corewarding.training.logprobs import pack
    from corewarding.training.update import micro_batch_loss

    trainer = _loss_trainer(tiny_pair, "rollout.temperature=1.0")
    model, _, pad_id = tiny_pair
    rollouts = _mb_rollouts()
    _, stats = micro_batch_loss(trainer, [0, 1], rollouts, [1.0, -1.0, 0.0], None, {})
    batch = pack(rollouts[:2], pad_id)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits[:, -batch.response_width - 1 : -1]  # fmt: skip
    mask = batch.response_mask
    for key, per_token in (("token_entropy", token_entropy), ("self_certainty", token_self_certainty)):
        want = float((per_token(logits.float()) * mask).sum() / mask.sum())
        assert stats[key] == pytest.approx(want, rel=1e-4), key
    # a method that computed them before scoring (needs_token_stats) does not get them again here
    trainer = _loss_trainer(tiny_pair, token_stats=True)
    _, stats = micro_batch_loss(trainer, [0, 1], rollouts, [1.0, -1.0, 0.0], None, {})
    assert "token_entropy" not in stats and "self_certainty" not in stats


def test_on_policy_micro_batches_have_ratio_one_and_without_kl_no_reference_runs(tiny_pair):
    from corewarding.training.update import micro_batch_loss

    trainer = _loss_trainer(tiny_pair, "grpo.kl_coef=0", reference=False)
    loss, stats = micro_batch_loss(trainer, [0, 1, 2], _mb_rollouts(), [1.0, -1.0, 0.5], None, {})
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0
    assert stats["ppo_kl"] == pytest.approx(0.0, abs=1e-7) and "kl" not in stats
    assert loss.requires_grad


def test_shared_prompts_are_run_once_when_the_trainer_allows_it_with_the_same_loss(tiny_pair):
    """Rollouts 0 and 1 share a prompt: with ``_share_prompts`` (off under gradient checkpointing, where
    models keep no cache) the policy and the reference each run the distinct prompts in one forward and the
    responses in another; without, each runs one forward over whole rows. The loss is the same."""
    from corewarding.training.update import micro_batch_loss

    model, reference, _ = tiny_pair
    losses, forwards = [], []
    for share in (True, False):
        trainer = _loss_trainer(tiny_pair, "grpo.kl_coef=0.3")
        trainer._share_prompts = share
        calls = {"policy": 0, "reference": 0}

        def counter(name, calls=calls):
            return lambda module, args, kwargs, out: calls.__setitem__(name, calls[name] + 1)

        hooks = [
            model.register_forward_hook(counter("policy"), with_kwargs=True),
            reference.register_forward_hook(counter("reference"), with_kwargs=True),
        ]
        try:
            loss, _ = micro_batch_loss(trainer, [0, 1, 2], _mb_rollouts(), [1.0, -1.0, 0.5], None, {})
        finally:
            for hook in hooks:
                hook.remove()
        losses.append(float(loss.detach()))
        forwards.append(calls)
    assert forwards == [{"policy": 2, "reference": 2}, {"policy": 1, "reference": 1}]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
