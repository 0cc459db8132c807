"""The Co-rewarding-II EMA teacher: cosine schedule and in-place updates checked by hand."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from corewarding.errors import ConfigError
from corewarding.training.teacher import EMATeacher, ema_coefficient


class Tiny(nn.Module):
    """A linear layer (parameters) and a batch norm (a float buffer and an integer buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.norm = nn.BatchNorm1d(1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 2.0]]))
            self.linear.bias.copy_(torch.tensor([0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


def _set(policy: Tiny, weight, bias, running_mean, batches) -> None:
    with torch.no_grad():
        policy.linear.weight.copy_(torch.tensor(weight))
        policy.linear.bias.copy_(torch.tensor(bias))
        policy.norm.running_mean.copy_(torch.tensor(running_mean))
        policy.norm.num_batches_tracked.fill_(batches)


def test_schedule_endpoints_and_midpoint():
    assert ema_coefficient(0, 100) == pytest.approx(0.01)
    assert ema_coefficient(100, 100) == pytest.approx(0.0001)
    assert ema_coefficient(50, 100) == pytest.approx((0.01 + 0.0001) / 2)
    # a quarter of the way: a_end + (a_start - a_end) * (1 + cos(pi/4)) / 2
    assert ema_coefficient(25, 100, a_start=1.0, a_end=0.0) == pytest.approx((1 + 2**-0.5) / 2)
    assert ema_coefficient(-5, 100) == ema_coefficient(0, 100)
    assert ema_coefficient(500, 100) == ema_coefficient(100, 100)
    values = [ema_coefficient(t, 10) for t in range(11)]
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError):
        ema_coefficient(0, 0)


def test_teacher_is_a_frozen_independent_copy():
    policy = Tiny()
    teacher = EMATeacher(policy)
    assert teacher.model is not policy
    assert not teacher.model.training
    assert all(not p.requires_grad for p in teacher.model.parameters())
    assert all(p.requires_grad for p in policy.parameters())
    _set(policy, [[9.0, 9.0]], [9.0], [9.0], 9)
    assert teacher.model.linear.weight.tolist() == [[1.0, 2.0]]  # no sharing of storage


def test_update_by_hand():
    policy = Tiny()
    teacher = EMATeacher(policy, a_start=0.01, a_end=0.0001)
    _set(policy, [[3.0, -2.0]], [1.5], [1.0], 7)
    assert teacher.update(policy, step=0, total_steps=10) is True
    assert teacher.last_a == pytest.approx(0.01)
    # teacher <- 0.99 * teacher + 0.01 * policy
    torch.testing.assert_close(
        teacher.model.linear.weight, torch.tensor([[0.99 * 1 + 0.03, 0.99 * 2 - 0.02]])
    )
    torch.testing.assert_close(teacher.model.linear.bias, torch.tensor([0.99 * 0.5 + 0.015]))
    torch.testing.assert_close(teacher.model.norm.running_mean, torch.tensor([0.01]))  # float buffer: EMA
    torch.testing.assert_close(teacher.model.norm.running_var, torch.tensor([1.0]))  # 1 in both
    assert teacher.model.norm.num_batches_tracked.item() == 7  # integer buffer: copied
    # at the end of the schedule the weight is a_end: 0.9999 * 1.02 + 0.0001 * 3
    teacher.update(policy, step=10, total_steps=10)
    assert teacher.model.linear.weight[0, 0].item() == pytest.approx(0.9999 * 1.02 + 0.0001 * 3.0)
    assert teacher.num_updates == 2
    assert all(not p.requires_grad for p in teacher.model.parameters())


def test_frozen_teacher_never_moves():
    policy = Tiny()
    teacher = EMATeacher(policy, ema_enabled=False)
    _set(policy, [[3.0, -2.0]], [1.5], [1.0], 7)
    for step in range(5):
        assert teacher.update(policy, step=step, total_steps=5) is False
    assert teacher.model.linear.weight.tolist() == [[1.0, 2.0]]
    assert teacher.model.norm.running_mean.tolist() == [0.0]
    assert teacher.last_a == 0.0
    assert teacher.num_updates == 0


def test_update_interval_is_respected():
    policy = Tiny()
    teacher = EMATeacher(policy, update_interval=3, a_start=0.5, a_end=0.5)
    _set(policy, [[3.0, 2.0]], [0.5], [0.0], 0)
    updated = [teacher.update(policy, step=s, total_steps=10) for s in range(1, 8)]
    assert updated == [False, False, True, False, False, True, False]  # steps 3 and 6
    # two updates of weight 0.5 towards 3 from 1: 1 -> 2 -> 2.5
    assert teacher.model.linear.weight[0, 0].item() == pytest.approx(2.5)
    assert teacher.num_updates == 2


def test_state_dict_round_trip():
    policy = Tiny()
    teacher = EMATeacher(policy)
    _set(policy, [[3.0, -2.0]], [1.5], [1.0], 7)
    teacher.update(policy, step=2, total_steps=10)
    restored = EMATeacher(Tiny())
    restored.load_state_dict(teacher.state_dict())
    for a, b in zip(restored.model.state_dict().values(), teacher.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert restored.last_a == teacher.last_a
    assert restored.num_updates == 1


def test_wrapped_or_different_policy_is_rejected():
    policy = Tiny()
    teacher = EMATeacher(policy)

    class Wrapper(nn.Module):  # what DDP / accelerate.prepare hand back: names gain a "module." prefix
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    with pytest.raises(ValueError, match="unwrap_model"):
        teacher.update(Wrapper(policy), step=0, total_steps=10)
    other = Tiny()
    other.linear = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="shape"):
        teacher.update(other, step=0, total_steps=10)


def test_config_validation_and_low_precision_warning():
    with pytest.raises(ConfigError, match="update_interval"):
        EMATeacher(Tiny(), update_interval=0)
    with pytest.raises(ConfigError, match="a_start"):
        EMATeacher(Tiny(), a_start=1.5)
    with pytest.warns(UserWarning, match="float32"):
        EMATeacher(Tiny().to(torch.bfloat16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        teacher = EMATeacher(Tiny().to(torch.bfloat16), dtype=torch.float32)
    assert teacher.model.linear.weight.dtype == torch.float32
    # a bf16 policy still updates an fp32 teacher (cast on the way in)
    policy = Tiny().to(torch.bfloat16)
    _set(policy, [[3.0, -2.0]], [1.5], [1.0], 7)
    teacher.update(policy, step=0, total_steps=10)
    assert teacher.model.linear.weight[0, 0].item() == pytest.approx(1.02)


def test_schedule_of_a_single_step():
    assert ema_coefficient(0, 1) == pytest.approx(0.01)
    assert ema_coefficient(1, 1) == pytest.approx(0.0001)
    with pytest.raises(ValueError, match=r"^total_steps must be positive, got -3$"):
        ema_coefficient(0, -3)


@pytest.mark.parametrize("interval", [True, 2.0, "2", 0])
def test_update_interval_must_be_a_positive_integer(interval):
    with pytest.raises(ConfigError, match=r"^teacher.update_interval must be an integer >= 1, got "):
        EMATeacher(Tiny(), update_interval=interval)


def test_schedule_bounds_are_inclusive_and_named():
    for a_start, a_end in ((0.0, 0.0), (1.0, 1.0)):
        teacher = EMATeacher(Tiny(), a_start=a_start, a_end=a_end)
        assert (teacher.a_start, teacher.a_end) == (a_start, a_end)
    with pytest.raises(ConfigError, match=r"^teacher.a_start must be in \[0, 1\], got -0.1$"):
        EMATeacher(Tiny(), a_start=-0.1)
    with pytest.raises(ConfigError, match=r"^teacher.a_end must be in \[0, 1\], got 2$"):
        EMATeacher(Tiny(), a_end=2)


def test_defaults_update_every_step():
    policy = Tiny()
    teacher = EMATeacher(policy)
    assert teacher.last_a is None and teacher.num_updates == 0
    assert [teacher.update(policy, step=s, total_steps=10) for s in (1, 2, 3)] == [True, True, True]


def test_a_teacher_built_by_the_caller_is_used_as_given():
    policy, copy = Tiny(), Tiny()
    teacher = EMATeacher(policy, model=copy)
    assert teacher.model is copy and not copy.training


def test_dtype_and_device_are_applied():
    teacher = EMATeacher(Tiny(), device="meta")
    assert all(p.device.type == "meta" for p in teacher.model.parameters())
    teacher = EMATeacher(Tiny(), dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 for p in teacher.model.parameters())


def test_the_low_precision_warning_says_what_to_do():
    with pytest.warns(UserWarning) as caught:
        EMATeacher(Tiny().to(torch.float16))
    (warning,) = caught
    assert Path(warning.filename).name != "teacher.py"  # it names the caller's line, not its own
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampoline adds a frame between us and teacher.py
        assert warning.filename == __file__
    assert str(warning.message) == (
        "EMA teacher parameters are 16-bit: updates of weight a≈1e-4 round away and the teacher will barely "
        "move; pass dtype=torch.float32 to keep an fp32 teacher"
    )


def test_mismatch_messages_name_the_kind_and_the_names():
    teacher = EMATeacher(Tiny())

    class Wider(Tiny):
        def __init__(self) -> None:
            super().__init__()
            for k in range(5):
                self.register_parameter(f"extra{k}", nn.Parameter(torch.zeros(1)))

    with pytest.raises(ValueError) as err:
        teacher.update(Wider(), step=0, total_steps=10)
    assert str(err.value).startswith(
        "EMA teacher: policy parameters do not match the teacher's (policy-only ['extra0', 'extra1', 'extra2'], "
        "missing [])"
    )

    class NoNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 1)
            self.register_buffer("counter", torch.zeros(1))
            self.norm = nn.Module()
            self.norm.weight = nn.Parameter(torch.ones(1))
            self.norm.bias = nn.Parameter(torch.zeros(1))

    with pytest.raises(ValueError) as err:
        teacher.update(NoNorm(), step=0, total_steps=10)
    assert str(err.value).startswith(
        "EMA teacher: policy buffers do not match the teacher's (policy-only ['counter'], missing "
        "['norm.num_batches_tracked', 'norm.running_mean', 'norm.running_var'])"
    )
    unrelated = nn.Module()
    unrelated.x = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError) as err:
        teacher.update(unrelated, step=0, total_steps=10)
    assert str(err.value).startswith(  # the first three of the four missing names
        "EMA teacher: policy parameters do not match the teacher's (policy-only ['x'], missing "
        "['linear.bias', 'linear.weight', 'norm.bias'])"
    )
    other = Tiny()
    other.linear = nn.Linear(3, 1)
    with pytest.raises(ValueError) as err:
        teacher.update(other, step=0, total_steps=10)
    assert str(err.value) == (
        "EMA teacher: linear.weight has shape (1, 3) in the policy but (1, 2) in the teacher (sharded "
        "parameters must be gathered before the update)"
    )


def test_state_dict_holds_the_schedule_and_counters():
    teacher = EMATeacher(Tiny(), ema_enabled=True, update_interval=2, a_start=0.5, a_end=0.25)
    state = teacher.state_dict()
    assert set(state) == {
        "model",
        "last_a",
        "num_updates",
        "ema_enabled",
        "update_interval",
        "a_start",
        "a_end",
    }
    assert {k: v for k, v in state.items() if k != "model"} == {
        "last_a": None,
        "num_updates": 0,
        "ema_enabled": True,
        "update_interval": 2,
        "a_start": 0.5,
        "a_end": 0.25,
    }


def test_an_old_state_without_counters_starts_them_afresh():
    teacher = EMATeacher(Tiny())
    teacher.num_updates, teacher.last_a = 5, 0.3
    teacher.load_state_dict({"model": Tiny().state_dict()})
    assert teacher.num_updates == 0 and teacher.last_a is None
