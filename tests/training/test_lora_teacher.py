"""``AdapterEMATeacher`` on its own, on the tiny model with LoRA adapters: what it is built as (EMA on by
default, an fp32 ``teacher`` adapter equal to the policy's), the schedule and counters of ``update``, the
interval, the frozen kind, and the state it saves and loads. test_lora.py covers it inside training runs;
these are the fast checks ``make mutants`` runs against teacher.py."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("peft")

from corewarding.config import load_config
from corewarding.errors import ConfigError
from corewarding.models.loading import load_model_and_tokenizer
from corewarding.training import lora
from corewarding.training.teacher import AdapterEMATeacher, ema_coefficient

TINY = "configs/tiny-cpu.yaml"
PROMPT = torch.tensor([[5, 17, 33, 2, 41, 8, 99, 3]])


@pytest.fixture(scope="module")
def tiny_model():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are too small for intra-op threads
    model, _ = load_model_and_tokenizer("builtin:tiny-qwen3", device="cpu", dtype="float32")
    yield model
    torch.set_num_threads(old)


def _peft(tiny_model, adapter_dtype: torch.dtype = torch.float32):
    cfg = load_config(TINY, ["model.lora.r=4"]).model.lora
    return lora.apply_lora(copy.deepcopy(tiny_model), cfg, adapter_dtype)


def _adapter(model, name: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lora.adapter_parameters(model, name)}


@torch.no_grad()
def _fill(model, adapter: str, seed: int) -> None:
    """Random values in every tensor of one adapter (peft starts B at 0)."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in lora.adapter_parameters(model, adapter):
        p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.05)


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    model.eval()
    return model(input_ids=PROMPT).logits.float()


def _twin(name: str) -> str:
    return name.replace(f".{lora.TEACHER}.", f".{lora.POLICY}.")


def test_by_default_the_teacher_is_an_fp32_adapter_equal_to_the_policys(tiny_model):
    model = _peft(tiny_model, torch.bfloat16)
    _fill(model, lora.POLICY, seed=1)
    teacher = AdapterEMATeacher(model)
    assert teacher.ema_enabled is True and teacher.adapter == lora.TEACHER == "teacher"
    assert teacher.model is model
    assert (teacher.update_interval, teacher.a_start, teacher.a_end) == (1, 0.01, 0.0001)
    assert teacher.last_a is None and teacher.num_updates == 0
    policy, mine = _adapter(model, lora.POLICY), _adapter(model, lora.TEACHER)
    assert len(mine) == len(policy) > 0
    for name, value in mine.items():
        assert value.dtype == torch.float32, name  # a ≈ 1e-4 steps would round away in bf16
        assert policy[_twin(name)].dtype == torch.bfloat16
        assert torch.equal(value, policy[_twin(name)].float()), name
    # only the policy's adapter trains
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(policy)


def test_update_follows_the_cosine_schedule_and_counts(tiny_model):
    model = _peft(tiny_model)
    teacher = AdapterEMATeacher(model, a_start=0.3, a_end=0.1)
    _fill(model, lora.POLICY, seed=2)
    for step, updates in ((0, 1), (5, 2), (10, 3)):
        before, policy = _adapter(model, lora.TEACHER), _adapter(model, lora.POLICY)
        assert teacher.update(model, step, 10) is True
        a = ema_coefficient(step, 10, 0.3, 0.1)
        assert teacher.last_a == pytest.approx(a) and teacher.num_updates == updates
        for name, value in _adapter(model, lora.TEACHER).items():
            assert torch.allclose(value, (1 - a) * before[name] + a * policy[_twin(name)], atol=1e-7), name
        assert _adapter(model, lora.POLICY).keys() == policy.keys()
        for name, value in _adapter(model, lora.POLICY).items():
            assert torch.equal(value, policy[name]), name  # the EMA never writes the policy
    assert [teacher.last_a, ema_coefficient(0, 10, 0.3, 0.1)] == pytest.approx([0.1, 0.3])


def test_a_bf16_policy_is_blended_into_the_fp32_teacher(tiny_model):
    model = _peft(tiny_model, torch.bfloat16)
    teacher = AdapterEMATeacher(model, a_start=1e-4, a_end=1e-4)
    _fill(model, lora.POLICY, seed=3)
    before = _adapter(model, lora.TEACHER)
    teacher.update(model, 1, 10)
    moved = 0
    for name, value in _adapter(model, lora.TEACHER).items():
        assert value.dtype == torch.float32
        src = dict(lora.adapter_parameters(model, lora.POLICY))[_twin(name)].detach().float()
        assert torch.allclose(value, torch.lerp(before[name], src, 1e-4), atol=1e-9)
        moved += int((value != before[name]).sum())
    assert moved > 0  # steps of a = 1e-4 land in fp32


def test_the_update_interval_skips_steps_without_touching_anything(tiny_model):
    model = _peft(tiny_model)
    teacher = AdapterEMATeacher(model, update_interval=3, a_start=0.5, a_end=0.5)
    _fill(model, lora.POLICY, seed=4)
    before = _adapter(model, lora.TEACHER)
    for step in (1, 2, 4, 5):
        assert teacher.update(model, step, 10) is False
    assert teacher.last_a is None and teacher.num_updates == 0
    for name, value in _adapter(model, lora.TEACHER).items():
        assert torch.equal(value, before[name]), name
    assert teacher.update(model, 6, 10) is True and teacher.num_updates == 1 and teacher.last_a == 0.5


@pytest.mark.parametrize("interval", [0, 1.5, True])
def test_schedule_settings_are_validated(tiny_model, interval):
    with pytest.raises(ConfigError, match=r"teacher\.update_interval must be an integer >= 1"):
        AdapterEMATeacher(_peft(tiny_model), update_interval=interval)
    with pytest.raises(ConfigError, match=r"teacher\.a_end must be in \[0, 1\], got 2"):
        AdapterEMATeacher(_peft(tiny_model), a_end=2)


def test_update_refuses_another_module(tiny_model):
    model = _peft(tiny_model)
    teacher = AdapterEMATeacher(model)
    with pytest.raises(ValueError, match=r"^the LoRA teacher averages the adapters of the peft module"):
        teacher.update(_peft(tiny_model), 1, 10)
    assert teacher.num_updates == 0 and teacher.last_a is None


def test_the_frozen_teacher_is_the_base_with_adapters_disabled(tiny_model):
    model = _peft(tiny_model)
    _fill(model, lora.POLICY, seed=5)
    teacher = AdapterEMATeacher(model, ema_enabled=False)
    assert teacher.ema_enabled is False and teacher.adapter is None
    assert _adapter(model, lora.TEACHER) == {}  # no second adapter at all
    assert teacher.update(model, 1, 10) is False
    assert teacher.last_a == 0.0 and teacher.num_updates == 0
    assert teacher.adapter_state() == {}
    teacher.load_adapter_state({"anything": torch.zeros(1)}, "ckpt")  # nothing to load, nothing checked
    with teacher.active() as running:
        assert running is model and lora.current_adapter(model) is None
        inside = _logits(model)
    assert torch.equal(inside, _logits(tiny_model))
    assert lora.current_adapter(model) == lora.POLICY
    assert not torch.equal(_logits(model), inside)  # the policy's filled adapter is back


def test_active_runs_the_teacher_adapter_and_restores_the_policys(tiny_model):
    model = _peft(tiny_model)
    teacher = AdapterEMATeacher(model)
    _fill(model, lora.POLICY, seed=6)
    _fill(model, lora.TEACHER, seed=7)
    policy_logits = _logits(model)
    with teacher.active() as running:
        assert running is model and lora.current_adapter(model) == lora.TEACHER
        teacher_logits = _logits(model)
    assert lora.current_adapter(model) == lora.POLICY
    assert torch.equal(_logits(model), policy_logits)
    assert not torch.equal(teacher_logits, policy_logits)


def test_adapter_state_round_trips(tiny_model):
    model = _peft(tiny_model)
    teacher = AdapterEMATeacher(model)
    _fill(model, lora.TEACHER, seed=8)
    state = teacher.adapter_state()
    assert list(state) == [n for n, _ in lora.adapter_parameters(model, lora.TEACHER)]
    saved = {n: v.clone() for n, v in state.items()}
    live = dict(lora.adapter_parameters(model, lora.TEACHER))
    assert all(torch.equal(value, live[name]) for name, value in saved.items())
    _fill(model, lora.TEACHER, seed=9)
    assert not all(torch.equal(v, saved[n]) for n, v in _adapter(model, lora.TEACHER).items())
    teacher.load_adapter_state(saved, "checkpoint-3")
    for name, value in _adapter(model, lora.TEACHER).items():
        assert torch.equal(value, saved[name]), name
    bad = dict(saved)
    bad.pop(next(iter(bad)))
    with pytest.raises(RuntimeError, match=r"^checkpoint checkpoint-3 does not match the LoRA adapters"):
        teacher.load_adapter_state(bad, "checkpoint-3")
