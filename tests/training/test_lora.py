"""LoRA through peft (``model.lora.r > 0``) on the tiny CPU model: only the adapters train (the base stays
bit-identical), the KL reference is the base with adapters disabled (so the KL is 0 at the first step), the
EMA teacher is a second adapter that moves by EMA only, the engine samples with the right adapter, and
checkpoints hold the adapters, resume exactly and export a merged model transformers loads alone."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("peft")

from corewarding.config import load_config
from corewarding.errors import ConfigError
from corewarding.models.builtin import resolve_model_path
from corewarding.models.loading import load_model_and_tokenizer
from corewarding.rollout.hf_engine import HFRolloutEngine
from corewarding.rollout.types import SamplingParams
from corewarding.training import lora
from corewarding.training.teacher import AdapterEMATeacher
from corewarding.training.trainer import Trainer

TINY = "configs/tiny-cpu.yaml"
# small enough that a one-step run takes seconds on a shared CPU; every method keeps its KL term (0.005)
FAST = [
    "model.lora.r=4",
    "data.limit=32",
    "trainer.batch_questions=2",
    "rollout.n=2",
    "teacher.n=2",
    "rollout.max_new_tokens=8",
    "validation.before_training=false",
    "trainer.val_every=0",
    "trainer.save_every=0",
    "trainer.export_dtype=float32",
]
CASES = {
    "gt": ["method=gt"],
    "majority_vote": ["method=majority_vote"],
    "self_certainty": ["method=self_certainty"],
    "entropy": ["method=entropy"],
    "co_rewarding_i": ["method=co_rewarding_i"],
    "co_rewarding_ii": ["method=co_rewarding_ii"],
    "co_rewarding_ii_frozen": ["method=co_rewarding_ii", "teacher.ema=false"],
    # peft makes the frozen embeddings' output require grad so checkpointed layers still backpropagate
    "entropy_checkpointing": ["method=entropy", "model.gradient_checkpointing=true"],
}
PROMPT = torch.tensor([[5, 17, 33, 2, 41, 8, 99, 3]])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model's matrices are far too small for intra-op threads: on a busy 2-core machine their
    spin-waiting made each linear ~500× slower. One thread for this module, then the old setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _config(tmp_path: Path, name: str, *overrides: str):
    return load_config(TINY, [*FAST, f"output_dir={tmp_path}", f"trainer.run_name={name}", *overrides])


def _base_file_weights() -> dict[str, torch.Tensor]:
    return load_file(str(Path(resolve_model_path("builtin:tiny-qwen3")) / "model.safetensors"))


def _adapter(model, name: str = lora.POLICY) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lora.adapter_parameters(model, name)}


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return model(input_ids=PROMPT).logits.float()
    finally:
        model.train(was)


@torch.no_grad()
def _perturb(model, adapter: str, seed: int, scale: float = 0.05) -> None:
    """Give an adapter a non-zero B (peft starts it at 0), so it really changes the model."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in lora.adapter_parameters(model, adapter):
        if ".lora_B." in name:
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_method_trains_only_the_adapters(case, tmp_path):
    cfg = _config(tmp_path, case, *CASES[case], "trainer.total_steps=1")
    trainer = Trainer(cfg, progress=False)
    policy = trainer.policy
    assert lora.is_peft_model(policy)
    trainable = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n and f".{lora.POLICY}." in n for n in trainable)
    # the optimizer holds the adapter and nothing else
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in trainable.values()}
    # one model in memory: no reference copy, the teacher is the policy's own module
    assert trainer.ref_model is None
    ema = cfg.method == "co_rewarding_ii" and cfg.teacher.ema
    if cfg.method == "co_rewarding_ii":
        assert isinstance(trainer.teacher, AdapterEMATeacher) and trainer.teacher.model is policy
    assert any(f".{lora.TEACHER}." in n for n in policy.state_dict()) == ema
    before = _adapter(policy)
    assert all(not v.any() for n, v in before.items() if ".lora_B." in n)  # B = 0: policy == base

    trainer.train()

    rows = _rows(trainer.run_dir)
    assert rows[-1]["step"] == 1
    assert rows[-1]["kl"] == pytest.approx(0.0, abs=1e-9)  # reference = base = the initial policy
    base = _base_file_weights()
    now = lora.merged_state_dict(policy, None)  # the base weights under their transformers names
    for name, value in base.items():
        assert torch.equal(now[name], value), f"base weight {name} changed"
    after = _adapter(policy)
    assert after.keys() == before.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no adapter weight changed"
    if cfg.method in ("self_certainty", "entropy"):  # rewards with a spread: B gets a real gradient
        assert rows[-1]["grad_norm"] > 0
        assert any(after[k].any() for k in after if ".lora_B." in k)
    if ema:
        # teacher ← (1 − a)·teacher + a·policy over adapter tensors only, from teacher = initial policy
        a = rows[-1]["teacher/ema_a"]
        teacher = _adapter(policy, lora.TEACHER)
        for name, value in teacher.items():
            src = name.replace(f".{lora.TEACHER}.", f".{lora.POLICY}.")
            assert torch.equal(value, torch.lerp(before[src], after[src], a)), name
    elif cfg.method == "co_rewarding_ii":
        assert rows[-1]["teacher/ema_a"] == 0.0


@pytest.mark.slow
def test_reference_is_the_base_with_adapters_disabled(tmp_path):
    cfg = _config(tmp_path, "ref", "method=self_certainty", "trainer.total_steps=2")
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    rows = _rows(trainer.run_dir)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["kl"] > 0  # the adapters moved the policy away from the base
    base, _ = load_model_and_tokenizer("builtin:tiny-qwen3", device="cpu", dtype="float32")
    with trainer._reference() as reference:
        assert reference is trainer.policy
        assert torch.equal(_logits(reference), _logits(base))
    assert not torch.allclose(_logits(trainer.policy), _logits(base))


@pytest.mark.slow
def test_checkpoint_resume_and_merged_export(tmp_path):
    from transformers import AutoModelForCausalLM

    overrides = ["method=co_rewarding_ii", "trainer.total_steps=2", "trainer.save_every=1"]
    cfg = _config(tmp_path, "ckpt", *overrides)
    trainer = Trainer(cfg, progress=False)
    # adapters that change the model (B ≠ 0), the teacher's different from the policy's
    _perturb(trainer.policy, lora.POLICY, seed=1)
    _perturb(trainer.policy, lora.TEACHER, seed=2)
    trainer.train()
    run = trainer.run_dir
    final_policy, final_teacher = _adapter(trainer.policy), _adapter(trainer.policy, lora.TEACHER)

    ck = run / "checkpoint-2"
    for folder in (ck / lora.ADAPTER_DIR, ck / "teacher" / lora.ADAPTER_DIR):  # peft's save_pretrained format
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    state = load_file(str(ck / "state" / "model.safetensors"))  # training state: the adapter only
    assert set(state) == set(final_policy)
    assert all(f".{lora.TEACHER}." in k for k in load_file(str(ck / "state" / "teacher.safetensors")))

    # the merged export is a plain transformers model with the adapted policy's logits
    merged = AutoModelForCausalLM.from_pretrained(ck, dtype=torch.float32)
    expected = _logits(trainer.policy)
    assert torch.allclose(_logits(merged), expected, atol=1e-5), (_logits(merged) - expected).abs().max()
    teacher_export = AutoModelForCausalLM.from_pretrained(ck / "teacher", dtype=torch.float32)
    with trainer.teacher.active() as teacher:
        assert torch.allclose(_logits(teacher_export), _logits(teacher), atol=1e-5)
    evaluated, _ = load_model_and_tokenizer(str(ck), device="cpu", dtype="float32")  # corewarding eval's path
    assert torch.allclose(_logits(evaluated), expected, atol=1e-5)
    # merge_on_export=false: the adapter alone, which the loader merges onto its base
    trainer.cfg.model.lora.merge_on_export = False
    unmerged = tmp_path / "unmerged"
    unmerged.mkdir()
    trainer._export_lora(unmerged, torch.float32)
    assert not (unmerged / "config.json").exists()
    loaded, _ = load_model_and_tokenizer(str(unmerged), device="cpu", dtype="float32")
    assert torch.allclose(_logits(loaded), expected, atol=1e-5)

    # resume from checkpoint-1: the second step again gives the same adapters and teacher, bit for bit
    shutil.rmtree(ck)
    resumed = Trainer(_config(tmp_path, "ckpt", *overrides, "resume=true"), progress=False)
    assert resumed.resume_from is not None and resumed.resume_from[0] == 1
    resumed.train()
    for name, value in _adapter(resumed.policy).items():
        assert torch.equal(value, final_policy[name]), f"{name} differs after resume"
    for name, value in _adapter(resumed.policy, lora.TEACHER).items():
        assert torch.equal(value, final_teacher[name]), f"{name} differs after resume"
    assert resumed.teacher.num_updates == 1  # the step after the resume; the teacher state came from the file
    assert [r["step"] for r in _rows(run)] == [1, 2]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model_and_tokenizer("builtin:tiny-qwen3", device="cpu", dtype="float32")
    return model, tokenizer


def _peft_tiny(tiny):
    import copy

    model, tokenizer = tiny
    cfg = load_config(TINY, ["model.lora.r=4"]).model.lora
    return lora.apply_lora(copy.deepcopy(model), cfg, torch.float32), tokenizer


def _merged(peft_model, adapter):
    from transformers import AutoModelForCausalLM

    base = peft_model.get_base_model()
    plain = AutoModelForCausalLM.from_config(base.config)
    plain.load_state_dict(lora.merged_state_dict(peft_model, adapter), strict=False)
    return plain.eval()


def test_engine_samples_with_the_active_adapter(tiny):
    peft_model, tokenizer = _peft_tiny(tiny)
    teacher = AdapterEMATeacher(peft_model, ema_enabled=True)
    _perturb(peft_model, lora.POLICY, seed=3, scale=0.5)
    _perturb(peft_model, lora.TEACHER, seed=4, scale=0.5)
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}]]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, seed=0)

    def sample(model) -> list[int]:
        return HFRolloutEngine(model, tokenizer).generate(prompts, 1, greedy)[0].response_ids

    engine = HFRolloutEngine(peft_model, tokenizer)
    policy_ids = engine.generate(prompts, 1, greedy)[0].response_ids
    assert policy_ids == sample(_merged(peft_model, lora.POLICY))
    with teacher.active():
        teacher_ids = engine.generate(prompts, 1, greedy)[0].response_ids
    assert teacher_ids == sample(_merged(peft_model, lora.TEACHER))
    base_ids = sample(tiny[0])
    assert len({tuple(policy_ids), tuple(teacher_ids), tuple(base_ids)}) == 3
    # after the block the policy's adapter is active and the only trainable one again
    assert lora.current_adapter(peft_model) == lora.POLICY
    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == set(_adapter(peft_model))


def test_vllm_sync_streams_merged_weights_of_the_active_adapter(tiny):
    from corewarding.rollout.vllm_engine import iter_full_weights

    peft_model, _ = _peft_tiny(tiny)
    AdapterEMATeacher(peft_model, ema_enabled=True)
    _perturb(peft_model, lora.POLICY, seed=5)
    _perturb(peft_model, lora.TEACHER, seed=6)
    plain_names = [n for n, _ in tiny[0].named_parameters()]
    for adapter, block in (
        (lora.POLICY, lora.adapter_active(peft_model, lora.POLICY)),
        (lora.TEACHER, lora.adapter_active(peft_model, lora.TEACHER)),
        (None, lora.adapter_active(peft_model, None)),
    ):
        with block:
            streamed = dict(iter_full_weights(peft_model))
        expected = lora.merged_state_dict(peft_model, adapter)
        assert list(streamed) == plain_names  # what vLLM's load_weights knows
        for name, value in streamed.items():
            assert torch.equal(value, expected[name]), (adapter, name)


def test_ema_moves_only_the_teacher_adapter(tiny):
    peft_model, _ = _peft_tiny(tiny)
    teacher = AdapterEMATeacher(peft_model, ema_enabled=True, a_start=0.5, a_end=0.5)
    _perturb(peft_model, lora.POLICY, seed=7)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    assert teacher.update(peft_model, 1, 10) and teacher.last_a == 0.5
    for name, value in peft_model.named_parameters():
        if f".{lora.TEACHER}." in name:
            src = before[name.replace(f".{lora.TEACHER}.", f".{lora.POLICY}.")]
            assert torch.equal(value, torch.lerp(before[name], src, 0.5))
        else:
            assert torch.equal(value, before[name]), name
    frozen = AdapterEMATeacher(_peft_tiny(tiny)[0], ema_enabled=False)
    assert frozen.adapter is None and not frozen.update(frozen.model, 1, 10) and frozen.adapter_state() == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora.r=-1", "model.lora.r"),
        ("model.lora.alpha=0", "model.lora.alpha"),
        ("model.lora.dropout=1.0", "model.lora.dropout"),
        ("model.lora.target_modules=[]", "model.lora.target_modules"),
        ("model.lora.target_modules=[all-linear,q_proj]", "model.lora.target_modules"),
        ("distributed.strategy=fsdp2", "distributed.strategy=fsdp2"),
        ("distributed.strategy=deepspeed", "distributed.strategy=deepspeed"),
    ],
)
def test_invalid_lora_config_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, ["model.lora.r=8", override])


def test_lora_off_by_default_and_targets_every_projection():
    cfg = load_config(TINY).model.lora
    assert cfg.r == 0 and cfg.merge_on_export
    assert tuple(cfg.target_modules) == lora.DEFAULT_TARGET_MODULES
    assert lora.lora_alpha(load_config(TINY, ["model.lora.r=8"]).model.lora) == 16.0


def test_missing_peft_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft → ImportError
    with pytest.raises(ConfigError, match=r"corewarding\[lora\]"):
        lora.require_peft()


def test_unknown_target_module_is_a_clear_error(tiny):
    cfg = load_config(TINY, ["model.lora.r=4", "model.lora.target_modules=[no_such_proj]"]).model.lora
    import copy

    with pytest.raises(ConfigError, match="no_such_proj"):
        lora.apply_lora(copy.deepcopy(tiny[0]), cfg, torch.float32)


def test_memory_plan_counts_adapters_and_no_copies(tmp_path):
    from corewarding.training import memory_plan as mp

    shape = mp.ModelShape.from_config(
        {
            "model_type": "qwen3",
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 151936,
        }
    )
    full = mp.build_plan(shape, mp.settings_from_config(load_config("configs/paper/co_rewarding_i.yaml"), 8))
    cfg = load_config("configs/paper/co_rewarding_i.yaml", ["model.lora.r=64"])
    s = mp.settings_from_config(cfg, 8)
    assert s.strategy == "ddp" and s.lora  # auto on several GPUs: DDP, the strategy LoRA runs under
    plan = mp.build_plan(shape, s)
    adapters = mp.lora_parameter_count(shape, 64, tuple(cfg.model.lora.target_modules))
    assert adapters == 64 * 36 * (4096 + 4096 + 2 * (4096 + 1024) + 4096 + 4096 + 3 * (4096 + 12288))
    assert plan.value("weights") == mp.parameter_count(shape) * 2  # the frozen base in bf16, unsharded
    assert plan.value("optimizer") == 2 * adapters * 4
    assert plan.value("gradients") == adapters * 4
    assert plan.value("reference") == 0
    assert plan.peak_bytes < full.peak_bytes and plan.fits
    with pytest.raises(ConfigError, match="fsdp2"):
        mp.settings_from_config(cfg, 8, strategy="fsdp2")
    ema = mp.build_plan(
        shape,
        mp.settings_from_config(load_config("configs/paper/co_rewarding_ii.yaml", ["model.lora.r=64"]), 8),
    )
    assert ema.value("teacher") == adapters * 4


@pytest.mark.slow
def test_two_ddp_processes_keep_the_adapters_in_sync(tmp_path, torchrun):
    import os

    args = [
        "-m",
        "corewarding",
        "train",
        TINY,
        *FAST,
        "method=self_certainty",
        "trainer.total_steps=2",
        "trainer.batch_questions=4",
        "trainer.save_every=2",
        f"output_dir={tmp_path}",
        "trainer.run_name=ddp",
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = torchrun(args, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(tmp_path / "ddp")
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-9) and rows[1]["kl"] > 0
    assert rows[1]["grad_norm"] > 0 and rows[1]["dist/param_spread"] == 0.0
    state = load_file(str(tmp_path / "ddp" / "checkpoint-2" / "state" / "model.safetensors"))
    assert state and all(".lora_" in k for k in state)
