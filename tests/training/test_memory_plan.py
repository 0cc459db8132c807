"""``corewarding plan``: the memory arithmetic, checked by hand, against real models, and end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

from corewarding.cli import main
from corewarding.config import load_config
from corewarding.errors import ConfigError
from corewarding.training import memory_plan as mp

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1000,
}
QWEN3_8B = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}


# ------------------------------------------------------------------------------------ parameter count
@pytest.mark.parametrize(
    "config",
    [
        Qwen3Config(**SMALL, tie_word_embeddings=False),
        Qwen3Config(**SMALL, tie_word_embeddings=True),
        Qwen3Config(**SMALL, tie_word_embeddings=False, attention_bias=True),
        Qwen2Config(**{k: v for k, v in SMALL.items() if k != "head_dim"}, tie_word_embeddings=False),
        Qwen2Config(**{k: v for k, v in SMALL.items() if k != "head_dim"}, tie_word_embeddings=True),
        LlamaConfig(**SMALL, tie_word_embeddings=False, attention_bias=True, mlp_bias=True),
        LlamaConfig(**{**{k: v for k, v in SMALL.items() if k != "head_dim"}, "num_key_value_heads": 4}),
    ],
    ids=["qwen3", "qwen3-tied", "qwen3-bias", "qwen2", "qwen2-tied", "llama-bias", "llama-mha"],
)
def test_parameter_count_equals_a_real_model(config):
    model = AutoModelForCausalLM.from_config(config)
    shape = mp.ModelShape.from_config(config)
    assert mp.parameter_count(shape) == sum(p.numel() for p in model.parameters())


def test_qwen3_8b_parameter_count():
    shape = mp.ModelShape.from_config(QWEN3_8B)
    h, i, v, layers = 4096, 12288, 151936, 36
    per_layer = (
        h * 32 * 128  # q_proj
        + 2 * h * 8 * 128  # k_proj, v_proj
        + 32 * 128 * h  # o_proj
        + 2 * 128  # q_norm, k_norm
        + 3 * h * i  # gate, up, down
        + 2 * h  # the two RMSNorms
    )
    assert per_layer == 192_946_432
    assert 2 * v * h + layers * per_layer + h == 8_190_735_360  # embeddings + untied lm_head + layers + norm
    assert mp.parameter_count(shape) == 8_190_735_360


def test_unsupported_model_type_is_a_clear_error():
    with pytest.raises(ConfigError, match="mixtral"):
        mp.ModelShape.from_config({"model_type": "mixtral"})


# ------------------------------------------------------------------------------------ hand-computed plan
def small_shape() -> mp.ModelShape:
    return mp.ModelShape.from_config(Qwen3Config(**SMALL, tie_word_embeddings=False))


def small_settings(**changes) -> mp.PlanSettings:
    base = mp.PlanSettings(
        method="co_rewarding_ii",
        gpus=1,
        strategy="none",
        strategy_reason="test",
        storage_dtype="fp32",
        compute_dtype="bf16",
        micro_batch_size=2,
        prompt_length=32,
        response_length=64,
        gradient_checkpointing=True,
        has_teacher=True,
        teacher_ema=True,
        kl_coef=0.001,
        rollout_engine="hf",
        rollout_batch_size=8,
        policy_sequences_per_gpu=16,
        teacher_sequences_per_gpu=16,
    )
    return dataclasses.replace(base, **changes)


# per layer: q 64·64 + k 64·32 + v 64·32 + o 64·64 + q/k norms 2·16 + MLP 3·64·128 + norms 2·64 = 37,024
# total: embeddings 1000·64 + lm_head 1000·64 + 2 layers · 37,024 + final norm 64 = 202,112
P = 202_112
SBH = 96 * 2 * 64  # s = 32 + 64 tokens, b = 2 sequences, h = 64
# one layer's saved activations per token, bf16 (c = 2), SDPA; h 64, q 4·16 = 64, kv 2·16 = 32, i 128:
#   RMSNorms 2·(4·64 + 2·2·64) = 1,024   attention 4·2·64 = 512   MLP 4·2·128 = 1,024   rsqrt rows 8
#   q/k norms (4 + 2)·(64 + 32) + 4·(4 + 2) = 600   mask 2·96 + lse 4·4 = 208        total 3,376
LAYER_ACT = 96 * 2 * 3_376  # = 648,192 for the micro-batch's 192 tokens
# autocast over fp32 weights: the norms keep 2·(4·64 + 4·64) + 5 input casts 5·2·64 = 1,664, not 1,024
LAYER_ACT_AUTOCAST = 96 * 2 * (3_376 - 1_024 + 1_664)  # = 771,072


def test_small_shape_by_hand():
    shape = small_shape()
    assert mp.parameter_breakdown(shape)["per_layer"] == 37_024
    assert mp.parameter_count(shape) == P
    plan = mp.build_plan(shape, small_settings())
    assert plan.value("weights") == P * 4 == 808_448
    assert plan.value("gradients") == P * 4
    assert plan.value("optimizer") == P * 8 == 1_616_896  # two fp32 moments
    assert plan.value("teacher") == P * 4  # fp32 EMA copy
    assert plan.value("autocast_copies") == P * 2  # bf16 casts of fp32 weights, no sharding
    # KV cache: 2 (K, V) · 2 layers · 2 KV heads · 16 head_dim · 2 bytes = 256 bytes per token;
    # 8 sequences at once (min(rollout.batch_size 8, 16 sampled)) · 96 tokens
    assert shape.kv_bytes_per_token(2) == 256
    assert plan.value("policy_sequences") == 8
    assert plan.value("policy_kv_cache") == 8 * 96 * 256 == 196_608
    # prefill, one layer: 8 sequences · 32 prompt tokens · (2·64 + 3·128) · 2 bytes > sampling 2·8·1000·4
    assert plan.value("policy_generate_transient") == 8 * 32 * (2 * 64 + 3 * 128) * 2 == 262_144
    # logits: b·(R+1)·V bf16 kept; every fp32 slice b·R·V·4 saved for backward; one more slice of 64 ≤ 1024
    assert plan.value("logits") == 2 * 65 * 1000 * 2
    assert plan.value("logprob_slices") == 2 * 64 * 1000 * 4
    assert plan.value("logprob_slice") == 2 * 64 * 1000 * 4
    # with checkpointing and fp32 weights unsharded (autocast): one fp32 hidden state per layer + one layer
    assert plan.value("activations") == 2 * SBH * 4 + LAYER_ACT_AUTOCAST == 869_376
    assert plan.value("activations_alt") == 2 * LAYER_ACT_AUTOCAST  # without checkpointing: every layer's
    held = P * 4 + P * 8 + P * 4
    train = P * 4 + P * 2 + 869_376 + 2 * 65 * 1000 * 2 + 2 * 2 * 64 * 1000 * 4
    assert plan.phase_peaks[mp.TRAIN] == held + train
    assert plan.phase_peaks["policy rollout (hf)"] == held + 196_608 + 262_144
    assert plan.peak_bytes == held + train and plan.fits


def test_long_responses_keep_every_slice_but_reduce_one_at_a_time():
    plan = mp.build_plan(small_shape(), small_settings(response_length=3000))
    assert plan.value("logprob_slices") == 2 * 3000 * 1000 * 4  # all 3 slices saved for backward
    assert plan.value("logprob_slice") == 2 * 1024 * 1000 * 4  # the one being reduced: 1024 positions


def test_activation_formula():
    shape = small_shape()
    assert mp.layer_activation_bytes(96, 2, shape, 2) == LAYER_ACT
    assert mp.layer_activation_bytes(96, 2, shape, 2, autocast=True) == LAYER_ACT_AUTOCAST
    # eager attention keeps the fp32 softmax and its bf16 cast, (4 + 2)·4 heads·96 per token, not mask + lse
    eager = mp.layer_activation_bytes(96, 2, shape, 2, flash_attention=False)
    assert eager == 96 * 2 * (3_376 - 208 + 6 * 4 * 96)
    assert mp.activation_bytes(96, 2, shape, 2, checkpointing=False) == 2 * LAYER_ACT
    # checkpointing: one bf16 hidden state s·b·h·2 per layer + one layer's full activations
    assert mp.activation_bytes(96, 2, shape, 2, checkpointing=True) == 2 * SBH * 2 + LAYER_ACT
    # Qwen3-8B's layer: 55.5·s·b·h besides the mask and rows, against Korthikanti's 34·s·b·h
    big = mp.ModelShape.from_config(QWEN3_8B)
    rows = 8 + 4 * (32 + 8) + 4 * 32 + 2 * 1
    assert mp.layer_activation_bytes(1, 1, big, 2) == 55.5 * 4096 + rows
    assert mp.korthikanti_layer_bytes(1, 1, big) == 34 * 4096


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16", "autocast"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
def test_layer_activation_formula_matches_what_autograd_saves(family, attention, autocast):
    """The per-layer formula against the tensors a real decoder layer saves (padded batch, as trained)."""
    import contextlib

    if family == "qwen3":
        config = Qwen3Config(**SMALL, attn_implementation=attention)
    else:
        config = Qwen2Config(
            **{k: v for k, v in SMALL.items() if k != "head_dim"}, attn_implementation=attention
        )
    model = AutoModelForCausalLM.from_config(config)
    if not autocast:
        model = model.to(torch.bfloat16)
    params = {p.data_ptr() for p in model.parameters()}
    s, b = 48, 2
    ids = torch.randint(0, 1000, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, :5] = 0  # left padding, like every GRPO batch
    saved: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def saved_bytes() -> int:
        saved.clear()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            model.model(input_ids=ids, attention_mask=mask)
        return sum(saved.values())

    layers = model.model.layers
    two = saved_bytes()
    model.model.layers = layers[:1]
    one = saved_bytes()
    model.model.layers = layers
    per_layer = two - one
    if autocast:  # the bf16 copies of the Linear weights: the plan counts them as autocast weight copies
        per_layer -= sum(p.numel() * 2 for p in layers[1].parameters() if p.dim() == 2)
    shape = mp.ModelShape.from_config(config)
    estimate = mp.layer_activation_bytes(
        s, b, shape, 2, autocast=autocast, flash_attention=attention == "sdpa"
    )
    assert per_layer == estimate


def test_teacher_and_reference_copies():
    shape = small_shape()
    frozen = mp.build_plan(shape, small_settings(teacher_ema=False))
    assert frozen.value("teacher") == P * 2  # compute dtype
    ref = mp.build_plan(shape, small_settings(method="co_rewarding_i", has_teacher=False))
    assert ref.value("reference") == P * 2
    assert not any(r.key == "teacher" for r in ref.rows)
    no_kl = mp.build_plan(shape, small_settings(method="entropy", has_teacher=False, kl_coef=0.0))
    assert not any(r.key in ("teacher", "reference") for r in no_kl.rows)


def test_fsdp2_divides_by_gpus_and_ddp_does_not():
    shape = small_shape()
    fsdp = mp.build_plan(shape, small_settings(gpus=4, strategy="fsdp2"))
    ddp = mp.build_plan(shape, small_settings(gpus=4, strategy="ddp"))
    for key, full in (("weights", P * 4), ("gradients", P * 4), ("optimizer", P * 8), ("teacher", P * 4)):
        assert fsdp.value(key) == full // 4
        assert ddp.value(key) == full
    odd = mp.build_plan(shape, small_settings(gpus=3, strategy="fsdp2"))
    assert odd.value("weights") == -(-P * 4 // 3) == 269_483  # rounded up
    # gathered while training: root (embeddings 64,000 + lm_head 64,000 + norm 64) weights and grads, and
    # two decoder layers, in bf16
    assert fsdp.value("gathered") == 128_064 * 2 * 2 + 2 * 37_024 * 2 == 660_352
    assert (
        fsdp.value("policy_gathered") == fsdp.value("teacher_gathered") == P * 2
    )  # whole model for generate
    # sharded: the residual stream is bf16 (FSDP2 mixed precision), so checkpointing keeps 2 bytes per value
    assert fsdp.value("activations") == 2 * SBH * 2 + LAYER_ACT == 697_344
    assert not any(r.key == "gathered" for r in ddp.rows)
    assert ddp.value("autocast_copies") == P * 2  # unsharded: autocast casts every fp32 weight to bf16
    assert not any(r.key == "autocast_copies" for r in fsdp.rows)


def test_vllm_budget_on_qwen3_8b():
    shape = mp.ModelShape.from_config(QWEN3_8B)
    plan = mp.build_plan(
        shape, small_settings(rollout_engine="vllm", prompt_length=512, response_length=3072)
    )
    share = int(0.4 * 80 * 1024**3)  # 34,359,738,368
    weights = 8_190_735_360 * 2  # its bf16 copy: 16,381,470,720
    per_sequence = 2 * 36 * 8 * 128 * 2 * 3584  # 147,456 bytes a token · 3,584 tokens = 528,482,304
    assert plan.vllm is not None
    assert (plan.vllm.share_bytes, plan.vllm.weights_bytes) == (share, weights)
    assert plan.vllm.kv_budget_bytes == share - weights == 17_978_267_648
    assert plan.vllm.full_length_sequences == (share - weights) // per_sequence == 34
    assert plan.value("vllm_share") == share
    # the teacher samples through the same engine: its phase is vLLM's share too, no hf KV cache
    teacher_rows = [r.key for r in plan.rows if r.phase == "teacher rollout (vllm)"]
    assert teacher_rows == ["vllm_share"]
    assert plan.phase_peaks["teacher rollout (vllm)"] == plan.phase_peaks["policy rollout (vllm)"]
    # without sleep mode the share stays through training: counted once, as held
    awake = mp.build_plan(shape, small_settings(rollout_engine="vllm", vllm_sleeps=False))
    assert awake.value("vllm_share_held") == share
    assert not any(r.key == "vllm_share" for r in awake.rows)


def test_verdicts_say_what_to_change():
    shape = mp.ModelShape.from_config(QWEN3_8B)
    # 256 sequences per generate call (what the paper config once said) does not fit on 8 GPUs
    cfg = load_config("configs/paper/co_rewarding_ii.yaml", ["rollout.batch_size=256"])
    s = mp.settings_from_config(cfg, 8)
    plan = mp.build_plan(shape, s)
    assert not plan.fits and plan.peak_phase == "policy rollout (hf)"
    k = mp.largest_fitting_rollout_batch(shape, s)
    assert k is not None and 1 < k < 128
    assert mp.build_plan(shape, dataclasses.replace(s, rollout_batch_size=k)).fits
    assert not mp.build_plan(shape, dataclasses.replace(s, rollout_batch_size=k + 1)).fits
    assert mp.verdict(plan).endswith(f"fits with rollout.batch_size={k}")
    # vLLM with too small a share for its own weights: the verdict names a share that fits
    vllm = dataclasses.replace(s, rollout_engine="vllm", gpu_memory_utilization=0.1)
    assert mp.build_plan(shape, vllm).vllm.full_length_sequences == 0
    u = mp.best_vllm_utilization(shape, vllm)
    assert u is not None and mp.build_plan(shape, dataclasses.replace(vllm, gpu_memory_utilization=u)).fits
    assert f"fits with rollout.gpu_memory_utilization={u:.2f}" in mp.verdict(mp.build_plan(shape, vllm))
    small = mp.build_plan(small_shape(), small_settings())
    assert mp.verdict(small).startswith("fits on 1 × 80 GB (none): YES")


def test_strategy_resolution():
    assert mp.resolve_strategy("auto", 1)[0] == "none"
    assert mp.resolve_strategy("auto", 8)[0] == "fsdp2"
    assert mp.resolve_strategy("ddp", 8)[0] == "ddp"
    assert mp.resolve_strategy("auto", 8, "deepspeed") == ("deepspeed", "--strategy")


def test_settings_from_the_paper_config():
    cfg = load_config("configs/paper/co_rewarding_i.yaml")
    s = mp.settings_from_config(cfg, 8)
    assert (s.strategy, s.storage_dtype, s.compute_dtype) == ("fsdp2", "fp32", "bf16")
    assert (s.micro_batch_size, s.sequence_length, s.gradient_checkpointing) == (4, 512 + 3072, True)
    assert s.policy_sequences_per_gpu == 128 // 8 * 8 * 2  # questions per GPU · n · two views
    assert (s.has_teacher, s.kl_coef) == (False, 0.005)


# ------------------------------------------------------------------------------------ against the real code
def test_logprob_slices_saved_for_backward_match_response_forward():
    """The plan's fp32 slice row is what ``response_forward`` really keeps for the backward."""
    from corewarding.training.logprobs import PackedBatch, response_forward

    config = Qwen3Config(**SMALL, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    b, p, r, v = 2, 8, 40, 1000
    ids = torch.randint(0, v, (b, p + r))
    batch = PackedBatch(
        ids, torch.ones_like(ids), torch.arange(p + r).expand(b, -1), ids[:, p:], torch.ones(b, r)
    )
    saved: dict[int, torch.Tensor] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved[t.data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        response_forward(model, batch, chunk_size=16)
    fp32_slices = sum(
        t.numel() * 4
        for t in saved.values()
        if t.dtype == torch.float32 and t.dim() == 3 and t.shape[-1] == v
    )
    plan = mp.build_plan(small_shape(), small_settings(micro_batch_size=b, response_length=r))
    assert fp32_slices == plan.value("logprob_slices") == b * r * v * 4


def test_kv_cache_formula_matches_a_real_cache():
    config = Qwen3Config(**SMALL, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, 1000, (3, 10)), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    real = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert real == mp.kv_cache_bytes(small_shape(), 3, 10, 2)


# ------------------------------------------------------------------------------------ the command
@pytest.fixture
def qwen3_8b_config(tmp_path):
    path = tmp_path / "qwen3-8b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(QWEN3_8B))
    return path


def test_plan_command_on_the_paper_config(qwen3_8b_config, tmp_path, capsys):
    out_json = tmp_path / "out" / "plan.json"
    args = ["plan", "configs/paper/co_rewarding_ii.yaml", "--model-config", str(qwen3_8b_config)]
    assert main([*args, "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "8,190,735,360" in printed
    last = printed.strip().splitlines()[-2:]
    assert last[0].startswith("fits on 4 × 80 GB (fsdp2): ")
    assert last[1].startswith("fits on 8 × 80 GB (fsdp2): ")
    data = json.loads(out_json.read_text())
    assert data["model"]["parameters"]["total"] == 8_190_735_360
    assert [p["gpus"] for p in data["plans"]] == [4, 8]
    eight = data["plans"][1]
    weights = next(r for r in eight["rows"] if r["key"] == "weights")
    assert weights["value"] == 8_190_735_360 * 4 // 8  # fp32, sharded over 8
    # the paper config's rollout.batch_size=48 was chosen with this command: it fits 4 and 8 GPUs
    assert eight["strategy"] == "fsdp2" and eight["fits"] is True and data["plans"][0]["fits"] is True
    assert data["verdicts"] == last
    assert not list(out_json.parent.glob("*.tmp*"))  # the atomic write left nothing behind


def test_plan_command_gpus_flag_adds_a_column_and_overrides_apply(qwen3_8b_config, capsys):
    args = [
        "plan",
        "configs/paper/co_rewarding_i.yaml",
        "--model-config",
        str(qwen3_8b_config),
        "--gpus",
        "2",
    ]
    assert main([*args, "--strategy", "ddp", "rollout.batch_size=8", "micro_batch_size=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[-3:]] == [
        "fits on 2 × 80 GB (ddp)",
        "fits on 4 × 80 GB (ddp)",
        "fits on 8 × 80 GB (ddp)",
    ]
    assert "micro-batch 1 × (512 + 3072)" in "\n".join(lines)


def test_missing_model_config_is_a_clear_error(tmp_path, capsys):
    assert main(["plan", "configs/paper/co_rewarding_ii.yaml", "--model-config", str(tmp_path)]) == 2
    assert f"--model-config {tmp_path}: no config.json" in capsys.readouterr().err
    name = "corewarding-tests/no-such-model"
    assert main(["plan", "configs/paper/co_rewarding_ii.yaml", f"model.name_or_path={name}"]) == 2
    err = capsys.readouterr().err
    assert name in err and "--model-config" in err
