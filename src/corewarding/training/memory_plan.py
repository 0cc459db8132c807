"""Per-GPU memory plan of a training config: does the paper's setting on an 8B model fit, on how many GPUs?

Why: the paper trains Qwen3-8B-Base with fp32 master weights, AdamW, an EMA teacher (Co-rewarding-II) or a
KL reference, 3,584-token sequences and 256-sequence rollout batches. Whether that fits 4 or 8 80 GB GPUs
is arithmetic, and getting it wrong costs a GPU allocation and an out-of-memory crash an hour in. This
module does the arithmetic from the model's real shape (its ``config.json``) and the config, so
``corewarding plan`` can say "fits" or "does not fit, because of X" before anything loads. It needs no
torch; every figure is in bytes and every formula is below, so a number in the table can be checked by hand.

What is counted, per GPU: what is held for the whole run, plus the largest of the phases, which never
overlap (the training step, the policy's rollouts, the teacher's rollouts):

* Held for the whole run: the policy weights (``model.dtype``, fp32 by default), the AdamW moments (two per
  parameter, in the weights' dtype as ``torch.optim.AdamW`` keeps them: 8 bytes/param for fp32 weights; there
  are no separate master weights, the fp32 weights are the master weights), and the teacher
  (``co_rewarding_ii``: an fp32 EMA copy, or a compute-dtype copy when ``teacher.ema=false``; it is also the
  KL reference) or, for other methods with ``grpo.kl_coef > 0``, the KL reference (a compute-dtype copy).
* Training step, one micro-batch (``optim.micro_batch_size`` sequences of ``data.max_prompt_length +
  rollout.max_new_tokens`` tokens): the gradients (the weights' dtype), the activations, the logits.
* Rollout: the KV cache of the sequences one ``generate`` call holds (hf engine), or vLLM's share of the GPU.
  With a teacher its own rollouts are a separate phase, through the same engine (loaded with its weights).

Sharding: under FSDP2 / DeepSpeed ZeRO-3 weights, gradients, optimizer state and the teacher/reference divide
by the number of GPUs; under DDP or one process they do not. Sharding adds the all-gathered weights, in the
compute dtype (FSDP2's ``MixedPrecisionPolicy(param_dtype=...)``), assumed to be:

* training: the root unit (embeddings, lm_head, final norm), whose weights *and* unsharded gradients stay
  gathered through the whole backward (it starts at lm_head and ends at the embeddings, and the root's
  gradients are reduce-scattered only then), plus two decoder layers (the one computing and the one being
  prefetched);
* generation: the whole model, because the trainer samples inside ``full_parameters`` (every unit
  unsharded) with either engine; the teacher and the reference are sharded like the policy, and the
  teacher is gathered the same way for its rollouts.

Without sharding and with 16-bit compute over fp32 weights, autocast keeps a compute-dtype copy of every
weight it casts until the forward ends (its weight cache; without checkpointing the copies are also saved
for backward), and the residual stream between layers stays in the weights' dtype.

Activations are an **estimate**: what autograd saves in transformers' Qwen3 / Qwen2 / Llama decoder layer,
itemised with ``torch.autograd.graph.saved_tensors_hooks`` on CPU and written as a formula per token per
layer (``layer_activation_bytes``; with c compute bytes: ``2·(4 + 2c)·h`` for the two RMSNorms, which keep
an fp32 copy, ``4c·q`` for attention, ``4c·i`` for the SwiGLU MLP, ``(4 + c)·(q + kv)`` for Qwen3's q/k
norms, ``c·s`` for the padding mask SDPA keeps, a few fp32 rows; autocast over fp32 weights keeps fp32 norm
outputs and per-projection input casts instead, ``26h`` rather than ``16h`` at c = 2). The test checks it
against the real layer. It assumes SDPA's memory-efficient / flash kernels (no s×s scores kept; what the
trainer gets on a GPU, since padded batches pass a mask) and the padding mask that makes HF repeat K and V
to every head; ``flash_attention=False`` (``--eager-attention``) keeps the fp32 softmax and its cast,
``(4 + c)·a·s`` per token, instead. For comparison, Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models") give ``s·b·h·(34 + 5·a·s/h)`` bytes for a 16-bit GPT layer,
``34·s·b·h`` without the scores; Qwen3-8B's layer keeps ``55.5·s·b·h`` + the mask by the formula here, the
difference being mostly the RMSNorms' fp32 copies and the wider (3h, gated) MLP. GPU kernels may keep a
little more or less (workspace, kernel-specific saved tensors), hence "estimate". With gradient
checkpointing the stored activations are one residual-stream hidden state per layer (``s·b·h`` × its dtype)
plus one layer's full activations while it is recomputed in the backward. The final norm and the embedding
output (about one RMSNorm's worth) are not counted.

The logits: ``response_forward`` asks for the response positions only (``logits_to_keep = R + 1``), so the
model materialises ``b·(R+1)·V`` logits in the compute dtype. It then computes log-probs in fp32 slices of
1024 positions, but every slice's fp32 copy is saved by ``logsumexp`` for the backward, so the slices add up
to ``b·R·V·4`` bytes for the policy's forward (checked with ``saved_tensors_hooks``); add one more fp32 slice
for the reduction being computed. The reference's forward runs without gradient before the policy's and is
smaller, so it is not counted separately.

The rollout KV cache: ``2 (K and V) × layers × KV heads × head_dim × compute bytes`` per token, for every
sequence one ``generate`` call holds (``min(rollout.batch_size, questions per GPU × n × views)``) at
full prompt + response length. During generation one more transient is counted: the larger of the prefill's
activations (one layer, no gradient: ``sequences·prompt·(2h + 3·intermediate)`` × compute bytes) and the
sampling logits (two fp32 ``sequences × V`` tensors). The sum is an upper bound: the prefill runs while the
cache holds only the prompts. With ``rollout.engine=vllm`` the rollout phase is vLLM's share of the GPU
(``rollout.gpu_memory_utilization`` × GPU memory), which must hold its bf16 weights; what is left is its KV
budget. With ``rollout.sleep_between_steps`` vLLM releases that share while the policy trains; without it the
share stays allocated for the whole run.

LoRA (``model.lora.r > 0``): the frozen base is held once, in the compute dtype (no fp32 master copy, no
optimizer state, no gradients); the adapters, their gradients and AdamW moments are counted at
``r·(in + out)`` parameters per adapted projection (:func:`lora_parameter_count`). There is no reference copy
(the base with adapters disabled) and no teacher copy: an EMA teacher is a second, fp32 adapter, a frozen
teacher is the base itself. LoRA runs in one process or under DDP (the trainer refuses FSDP2 and ZeRO-3), so
``auto`` on several GPUs means ddp and nothing is divided by the GPU count. The base in compute dtype
makes the forward a 16-bit model's (no autocast weight cache, a 16-bit residual stream); each adapted
projection adds its ``r``-wide intermediate to the activations.

A GPU "fits" when the peak is at most ``(1 - margin)`` of its memory; the margin (10% by default) is for
the CUDA context, NCCL buffers and allocator fragmentation, none of which is modelled. ``--gpu-memory-gb 80``
means 80 GiB, what an "80 GB" card holds (A100: 81,920 MiB; H100: 81,559 MiB = 79.6 GiB, within the margin).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corewarding.errors import ConfigError
from corewarding.files import read_text

GIB = 1024**3
LOGPROB_CHUNK = 1024  # positions per fp32 slice in ``response_forward``

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_DTYPE_ALIASES = {
    "float32": "fp32",
    "fp32": "fp32",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "fp16": "fp16",
}
SHARDED_STRATEGIES = ("fsdp2", "deepspeed")
SUPPORTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")

HELD = "held for the whole run"
TRAIN = "training step, one micro-batch"
ROLLOUT = "policy rollout"
TEACHER_ROLLOUT = "teacher rollout"


def dtype_name(name: str, *, role: str) -> str:
    """Normalise a config dtype (``float32``, ``bf16``, ``auto`` ...) to fp32 / bf16 / fp16.

    ``auto`` means fp32 for the stored weights (``role="storage"``) and bf16 for computing on a GPU
    (``role="compute"``), which is what the trainer picks on any GPU with bf16 support.
    """
    if name == "auto":
        return "fp32" if role == "storage" else "bf16"
    if name not in _DTYPE_ALIASES:
        raise ConfigError(f"dtype {name!r}: expected auto or one of {', '.join(_DTYPE_ALIASES)}")
    return _DTYPE_ALIASES[name]


# ----------------------------------------------------------------------------------------------- model shape
@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only model that decide its memory (Qwen3, Qwen2 and Llama layouts)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # biases on q/k/v projections (Qwen2 always; Qwen3/Llama when attention_bias)
    o_bias: bool = False  # bias on the output projection (Qwen3/Llama when attention_bias)
    mlp_bias: bool = False  # biases on gate/up/down (Llama's mlp_bias)
    qk_norm: bool = False  # Qwen3's RMSNorm over head_dim on queries and keys

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a transformers ``PretrainedConfig`` (or a ``config.json`` dict) of a supported model type."""
        get = (
            config.get
            if isinstance(config, dict)
            else lambda key, default=None: getattr(config, key, default)
        )
        model_type = get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"model_type {model_type!r} is not supported by the memory plan "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        kv_heads = get("num_key_value_heads") or heads
        head_dim = get("head_dim") or hidden // heads
        attention_bias = bool(get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=int(get("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(get("intermediate_size")),
            num_layers=int(get("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,
            mlp_bias=bool(get("mlp_bias", False)) if model_type == "llama" else False,
            qk_norm=model_type == "qwen3",
        )

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V for every layer: ``2 × layers × kv_heads × head_dim × dtype_bytes``."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def describe(self) -> str:
        head = "tied lm_head" if self.tie_word_embeddings else "untied lm_head"
        return (
            f"{self.model_type}: {self.num_layers} layers, hidden {self.hidden_size}, {self.num_heads} heads / "
            f"{self.num_kv_heads} KV heads × {self.head_dim}, MLP {self.intermediate_size}, "
            f"vocab {self.vocab_size:,}, {head}"
        )


def parameter_breakdown(shape: ModelShape) -> dict[str, int]:
    """Exact parameter counts: ``embed_tokens``, ``lm_head`` (0 when tied), ``per_layer``, ``layers``,
    ``final_norm``, ``root`` (everything outside the decoder layers) and ``total``."""
    h, i = shape.hidden_size, shape.intermediate_size
    q_out = shape.num_heads * shape.head_dim
    kv_out = shape.num_kv_heads * shape.head_dim
    attention = h * q_out + 2 * h * kv_out + q_out * h
    if shape.qkv_bias:
        attention += q_out + 2 * kv_out
    if shape.o_bias:
        attention += h
    if shape.qk_norm:
        attention += 2 * shape.head_dim
    mlp = 3 * h * i + ((2 * i + h) if shape.mlp_bias else 0)
    norms = 2 * h  # input_layernorm and post_attention_layernorm
    per_layer = attention + mlp + norms
    embed = shape.vocab_size * h
    lm_head = 0 if shape.tie_word_embeddings else shape.vocab_size * h
    layers = shape.num_layers * per_layer
    root = embed + lm_head + h
    return {
        "embed_tokens": embed,
        "lm_head": lm_head,
        "per_layer": per_layer,
        "layers": layers,
        "final_norm": h,
        "root": root,
        "total": root + layers,
    }


def parameter_count(shape: ModelShape) -> int:
    return parameter_breakdown(shape)["total"]


LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_parameter_count(shape: ModelShape, rank: int, targets: tuple[str, ...]) -> int:
    """Adapter parameters: ``r·(in + out)`` for each adapted projection of every layer (``all-linear``: all
    seven; ``lm_head`` counts ``r·(h + V)`` once). Names the plan does not know add nothing."""
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    widths = {
        "q_proj": h + q,
        "k_proj": h + kv,
        "v_proj": h + kv,
        "o_proj": q + h,
        "gate_proj": h + i,
        "up_proj": h + i,
        "down_proj": i + h,
    }
    names = set(LORA_PROJECTIONS) if "all-linear" in targets else set(targets)
    per_layer = sum(w for name, w in widths.items() if name in names)
    head = shape.hidden_size + shape.vocab_size if "lm_head" in names else 0
    return rank * (shape.num_layers * per_layer + head)


def lora_projection_count(targets: tuple[str, ...]) -> int:
    """Adapted projections per layer (each keeps an r-wide intermediate for the backward)."""
    return len(LORA_PROJECTIONS) if "all-linear" in targets else len(set(targets) & set(LORA_PROJECTIONS))


# ----------------------------------------------------------------------------------------------- formulas
def layer_activation_bytes(
    tokens: int,
    batch: int,
    shape: ModelShape,
    compute_bytes: int,
    *,
    autocast: bool = False,
    flash_attention: bool = True,
) -> int:
    """One decoder layer's activations saved for the backward, in bytes (an estimate; see the module
    docstring). Per token, with c = ``compute_bytes``, h hidden, q/kv the query/KV projection widths,
    i the MLP width, a heads, s tokens:

    * each of the two RMSNorms: its fp32 upcast ``4h``, then ``2·c·h`` (normalised and cast back, × weight);
      under ``autocast`` (fp32 weights, 16-bit compute) ``4h + 4h`` and the casts of the inputs of
      q, k, v, gate and up, ``5·c·h``, instead;
    * Qwen3's q/k norms: ``(4 + c)·(q + kv)``;
    * attention: ``4·c·q`` (q, and k and v repeated to every head because a padding mask is passed, and
      the output), plus the mask as SDPA keeps it, ``c·s``; eager attention keeps the fp32 softmax and its
      cast, ``(4 + c)·a·s``, instead of the mask;
    * the SwiGLU MLP: ``4·c·i`` (gate, up, silu(gate), their product);
    * fp32 rsqrt and log-sum-exp rows: ``4·(2 + a)`` (+ ``4·(a + kv heads)`` with q/k norms).
    """
    h, i, c = shape.hidden_size, shape.intermediate_size, compute_bytes
    heads, kv_heads = shape.num_heads, shape.num_kv_heads
    q, kv = heads * shape.head_dim, kv_heads * shape.head_dim
    norms = 2 * (4 * h + 4 * h) + 5 * c * h if autocast else 2 * (4 * h + 2 * c * h)
    per_token = norms + 4 * c * q + 4 * c * i + 8
    if shape.qk_norm:
        per_token += (4 + c) * (q + kv) + 4 * (heads + kv_heads)
    per_token += c * tokens + 4 * heads if flash_attention else (4 + c) * heads * tokens
    return tokens * batch * per_token


def korthikanti_layer_bytes(
    tokens: int, batch: int, shape: ModelShape, *, flash_attention: bool = True
) -> int:
    """Korthikanti et al. 2022's ``s·b·h·(34 + 5·a·s/h)`` bytes (16-bit GPT layer; without the ``5·a·s/h``
    term under flash attention), for comparison: HF's Qwen3 layer keeps ~1.6× as much (fp32 norm copies)."""
    sbh = tokens * batch * shape.hidden_size
    return 34 * sbh + (0 if flash_attention else 5 * shape.num_heads * tokens * tokens * batch)


def activation_bytes(
    tokens: int,
    batch: int,
    shape: ModelShape,
    compute_bytes: int,
    *,
    checkpointing: bool,
    residual_bytes: int | None = None,
    autocast: bool = False,
    flash_attention: bool = True,
) -> int:
    """All layers' stored activations for one micro-batch. Without checkpointing: ``layers ×`` one layer's.
    With it: one hidden state per layer (``s·b·h × residual_bytes``) plus one layer's full activations."""
    layer = layer_activation_bytes(
        tokens, batch, shape, compute_bytes, autocast=autocast, flash_attention=flash_attention
    )
    if not checkpointing:
        return shape.num_layers * layer
    residual = compute_bytes if residual_bytes is None else residual_bytes
    return shape.num_layers * tokens * batch * shape.hidden_size * residual + layer


def kv_cache_bytes(shape: ModelShape, sequences: int, tokens: int, dtype_bytes: int) -> int:
    return sequences * tokens * shape.kv_bytes_per_token(dtype_bytes)


def shard(nbytes: int, gpus: int, sharded: bool) -> int:
    """Bytes per GPU: divided (rounded up) under FSDP2/ZeRO-3, replicated otherwise."""
    return -(-nbytes // gpus) if sharded else nbytes


# ----------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PlanSettings:
    """Everything besides the model shape that the plan depends on; ``settings_from_config`` fills it."""

    method: str
    gpus: int
    strategy: str  # resolved: none | ddp | fsdp2 | deepspeed
    strategy_reason: str
    storage_dtype: str  # fp32 | bf16 | fp16
    compute_dtype: str
    micro_batch_size: int
    prompt_length: int
    response_length: int
    gradient_checkpointing: bool
    has_teacher: bool
    teacher_ema: bool
    kl_coef: float
    rollout_engine: str  # hf | vllm
    rollout_batch_size: int
    policy_sequences_per_gpu: int  # sequences one GPU samples per step (questions/GPU × n × views)
    teacher_sequences_per_gpu: int
    gpu_memory_utilization: float = 0.4
    vllm_sleeps: bool = True
    gpu_memory_gib: float = 80.0
    margin: float = 0.1
    flash_attention: bool = True
    lora_rank: int = 0  # model.lora.r; 0 = full fine-tuning
    lora_targets: tuple[str, ...] = ()

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def sharded(self) -> bool:
        return self.strategy in SHARDED_STRATEGIES

    @property
    def sequence_length(self) -> int:
        return self.prompt_length + self.response_length

    @property
    def storage_bytes(self) -> int:
        return DTYPE_BYTES[self.storage_dtype]

    @property
    def compute_bytes(self) -> int:
        return DTYPE_BYTES[self.compute_dtype]

    @property
    def gpu_bytes(self) -> int:
        return int(self.gpu_memory_gib * GIB)

    @property
    def usable_bytes(self) -> int:
        return int(self.gpu_bytes * (1 - self.margin))

    @property
    def policy_concurrent(self) -> int:
        return max(1, min(self.rollout_batch_size, self.policy_sequences_per_gpu))

    @property
    def teacher_concurrent(self) -> int:
        return max(1, min(self.rollout_batch_size, self.teacher_sequences_per_gpu))


def resolve_strategy(configured: str, gpus: int, override: str | None = None) -> tuple[str, str]:
    """The strategy the plan assumes and why: ``--strategy``, else the config's, where ``auto`` means
    fsdp2 on several GPUs and none on one."""
    if override:
        return override, "--strategy"
    if configured != "auto":
        return configured, f"distributed.strategy={configured}"
    if gpus > 1:
        return "fsdp2", f"distributed.strategy=auto on {gpus} GPUs, assumed fsdp2"
    return "none", "distributed.strategy=auto on 1 GPU, assumed none"


def settings_from_config(
    cfg: Any,
    gpus: int,
    *,
    strategy: str | None = None,
    gpu_memory_gib: float = 80.0,
    margin: float = 0.1,
    flash_attention: bool = True,
) -> PlanSettings:
    """Read a ``corewarding.config.Config`` into plan settings for ``gpus`` GPUs."""
    from corewarding.rewards import method_class

    if gpus < 1:
        raise ConfigError(f"--gpus {gpus}: expected a positive number of GPUs")
    method = method_class(cfg.method)
    lora_rank = cfg.model.lora.r
    resolved, reason = resolve_strategy(cfg.distributed.strategy, gpus, strategy)
    if lora_rank > 0 and resolved in SHARDED_STRATEGIES:
        if strategy is not None or cfg.distributed.strategy != "auto":
            raise ConfigError(
                f"model.lora.r={lora_rank} runs in one process or under DDP; the trainer refuses {resolved} "
                "with LoRA (plan with --strategy ddp)"
            )
        resolved, reason = "ddp", f"distributed.strategy=auto on {gpus} GPUs with LoRA, assumed ddp"
    questions = math.ceil(cfg.trainer.batch_questions / gpus)
    views = 2 if method.needs_rephrased else 1
    return PlanSettings(
        method=cfg.method,
        gpus=gpus,
        strategy=resolved,
        strategy_reason=reason,
        storage_dtype=dtype_name(cfg.model.dtype, role="storage"),
        compute_dtype=dtype_name(cfg.model.compute_dtype, role="compute"),
        micro_batch_size=cfg.optim.micro_batch_size,
        prompt_length=cfg.data.max_prompt_length,
        response_length=cfg.rollout.max_new_tokens,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        has_teacher=method.needs_teacher,
        teacher_ema=cfg.teacher.ema,
        kl_coef=cfg.grpo.kl_coef,
        rollout_engine=cfg.rollout.engine,
        rollout_batch_size=cfg.rollout.batch_size,
        policy_sequences_per_gpu=questions * cfg.rollout.n * views,
        teacher_sequences_per_gpu=questions * cfg.teacher.n if method.needs_teacher else 0,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        vllm_sleeps=cfg.rollout.sleep_between_steps,
        gpu_memory_gib=gpu_memory_gib,
        margin=margin,
        flash_attention=flash_attention,
        lora_rank=lora_rank,
        lora_targets=tuple(cfg.model.lora.target_modules) if lora_rank > 0 else (),
    )


# ----------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Row:
    """One line of the plan. ``counted`` rows add to their phase; the others are shown for reference."""

    phase: str
    key: str
    label: str
    value: int  # bytes, or a count when ``unit == "count"``
    counted: bool = True
    unit: str = "bytes"
    note: str = ""


@dataclass(frozen=True)
class VLLMBudget:
    share_bytes: int  # gpu_memory_utilization × GPU memory
    weights_bytes: int  # its bf16 copy of the whole model
    kv_budget_bytes: int  # share − weights (may be negative: the weights alone do not fit its share)
    full_length_sequences: int  # how many prompt + response sequences the KV budget holds


@dataclass(frozen=True)
class MemoryPlan:
    settings: PlanSettings
    shape: ModelShape
    parameters: int
    rows: tuple[Row, ...]
    phase_peaks: dict[str, int]  # phase -> held + that phase's counted rows
    vllm: VLLMBudget | None = None

    @property
    def peak_bytes(self) -> int:
        return max(self.phase_peaks.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phase_peaks, key=lambda p: self.phase_peaks[p])

    @property
    def fits(self) -> bool:
        vllm_ok = self.vllm is None or self.vllm.full_length_sequences >= 1  # else vLLM refuses to start
        return vllm_ok and self.peak_bytes <= self.settings.usable_bytes

    def value(self, key: str) -> int:
        for row in self.rows:
            if row.key == key:
                return row.value
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": self.settings.gpus,
            "strategy": self.settings.strategy,
            "strategy_reason": self.settings.strategy_reason,
            "parameters": self.parameters,
            "settings": dataclasses.asdict(self.settings),
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "phase_peaks_bytes": dict(self.phase_peaks),
            "peak_bytes": self.peak_bytes,
            "peak_phase": self.peak_phase,
            "gpu_bytes": self.settings.gpu_bytes,
            "usable_bytes": self.settings.usable_bytes,
            "fits": self.fits,
            "vllm": dataclasses.asdict(self.vllm) if self.vllm else None,
        }


def _rollout_rows(
    phase: str, shape: ModelShape, s: PlanSettings, sequences: int, params: int, *, vllm: bool, who: str
) -> list[Row]:
    """Rows of one rollout phase: the gathered model (sharded), then vLLM's share or hf's KV cache."""
    cb = s.compute_bytes
    rows: list[Row] = []
    if s.sharded:
        rows.append(
            Row(phase, f"{who}_gathered", f"whole {who} all-gathered ({s.compute_dtype})", params * cb)
        )
    if vllm:
        if s.vllm_sleeps:  # otherwise the share is already counted as held for the whole run
            share = int(s.gpu_memory_utilization * s.gpu_bytes)
            rows.append(Row(phase, "vllm_share", f"vLLM's share ({s.gpu_memory_utilization:g} × GPU)", share))
        return rows
    rows.append(Row(phase, f"{who}_sequences", "sequences per generate call", sequences, False, "count"))
    rows.append(
        Row(
            phase,
            f"{who}_kv_cache",
            f"KV cache, {s.sequence_length} tokens each ({s.compute_dtype})",
            kv_cache_bytes(shape, sequences, s.sequence_length, cb),
        )
    )
    prefill = sequences * s.prompt_length * (2 * shape.hidden_size + 3 * shape.intermediate_size) * cb
    sampling = 2 * sequences * shape.vocab_size * 4
    label = "prefill activations, one layer" if prefill >= sampling else "sampling logits (2 × fp32)"
    rows.append(Row(phase, f"{who}_generate_transient", label, max(prefill, sampling)))
    return rows


def build_plan(shape: ModelShape, s: PlanSettings) -> MemoryPlan:
    """The per-GPU plan: rows by phase and the peak (see the module docstring for every formula)."""
    params = parameter_count(shape)
    breakdown = parameter_breakdown(shape)
    sb, cb, n, sharded = s.storage_bytes, s.compute_bytes, s.gpus, s.sharded
    rows: list[Row] = []
    if s.lora:
        return _finish_plan(shape, s, params, _lora_rows(shape, s, params))

    # held for the whole run
    rows.append(Row(HELD, "weights", f"policy weights ({s.storage_dtype})", shard(params * sb, n, sharded)))
    rows.append(
        Row(HELD, "optimizer", f"AdamW moments (2 × {s.storage_dtype})", shard(2 * params * sb, n, sharded))
    )
    if s.has_teacher:
        if s.teacher_ema:
            rows.append(
                Row(HELD, "teacher", "teacher, EMA (fp32) = KL reference", shard(params * 4, n, sharded))
            )
        else:
            label = f"teacher, frozen ({s.compute_dtype}) = KL reference"
            rows.append(Row(HELD, "teacher", label, shard(params * cb, n, sharded)))
    elif s.kl_coef > 0:
        label = f"KL reference ({s.compute_dtype})"
        rows.append(Row(HELD, "reference", label, shard(params * cb, n, sharded)))
    vllm_awake = s.rollout_engine == "vllm" and not s.vllm_sleeps
    if vllm_awake:
        share = int(s.gpu_memory_utilization * s.gpu_bytes)
        rows.append(Row(HELD, "vllm_share_held", "vLLM's share, not released (no sleep)", share))

    # training step
    rows.append(Row(TRAIN, "gradients", f"gradients ({s.storage_dtype})", shard(params * sb, n, sharded)))
    if sharded:
        root = breakdown["root"] * cb * 2  # weights + unsharded gradients
        layers = 2 * breakdown["per_layer"] * cb
        rows.append(
            Row(TRAIN, "gathered", f"gathered: root w+grad, 2 layers ({s.compute_dtype})", root + layers)
        )
    elif sb > cb:
        rows.append(Row(TRAIN, "autocast_copies", f"autocast weight copies ({s.compute_dtype})", params * cb))
    residual = cb if sharded else sb  # autocast keeps the residual stream in the weights' dtype
    autocast = not sharded and sb > cb
    kwargs = {"residual_bytes": residual, "autocast": autocast, "flash_attention": s.flash_attention}
    mb, seq = s.micro_batch_size, s.sequence_length
    on = activation_bytes(seq, mb, shape, cb, checkpointing=True, **kwargs)
    off = activation_bytes(seq, mb, shape, cb, checkpointing=False, **kwargs)
    rows += _activation_and_logit_rows(shape, s, on, off)
    return _finish_plan(shape, s, params, rows)


def _activation_and_logit_rows(shape: ModelShape, s: PlanSettings, on: int, off: int) -> list[Row]:
    """The training step's activations (``on``/``off``: with and without checkpointing) and logit rows."""
    ckpt, mb, cb = s.gradient_checkpointing, s.micro_batch_size, s.compute_bytes
    label = f"activations, checkpointing {'on' if ckpt else 'off'}"
    r, v = s.response_length, shape.vocab_size
    return [
        Row(TRAIN, "activations", label, on if ckpt else off),
        Row(
            TRAIN,
            "activations_alt",
            f"(with checkpointing {'off' if ckpt else 'on'})",
            off if ckpt else on,
            False,
        ),
        Row(TRAIN, "logits", f"logits b·(R+1)·V ({s.compute_dtype})", mb * (r + 1) * v * cb),
        Row(TRAIN, "logprob_slices", "fp32 log-prob slices kept for backward", mb * r * v * 4),
        Row(TRAIN, "logprob_slice", "one fp32 slice being reduced", mb * min(LOGPROB_CHUNK, r) * v * 4),
    ]


def _lora_rows(shape: ModelShape, s: PlanSettings, params: int) -> list[Row]:
    """Held and training-step rows of a LoRA run (unsharded: one process or DDP)."""
    sb, cb = s.storage_bytes, s.compute_bytes
    adapters = lora_parameter_count(shape, s.lora_rank, s.lora_targets)
    rows = [
        Row(HELD, "lora_params", f"adapter parameters (r={s.lora_rank})", adapters, False, "count"),
        Row(HELD, "weights", f"base weights, frozen ({s.compute_dtype})", params * cb),
        Row(HELD, "adapters", f"adapter weights ({s.storage_dtype})", adapters * sb),
        Row(HELD, "optimizer", f"AdamW moments, adapters only (2 × {s.storage_dtype})", 2 * adapters * sb),
    ]
    if s.has_teacher and s.teacher_ema:
        rows.append(Row(HELD, "teacher", "teacher adapter, EMA (fp32) = KL reference", adapters * 4))
    elif s.has_teacher:
        rows.append(Row(HELD, "teacher", "teacher: base, adapters off (no copy)", 0))
    elif s.kl_coef > 0:
        rows.append(Row(HELD, "reference", "KL reference: base, adapters off (no copy)", 0))
    if s.rollout_engine == "vllm" and not s.vllm_sleeps:
        share = int(s.gpu_memory_utilization * s.gpu_bytes)
        rows.append(Row(HELD, "vllm_share_held", "vLLM's share, not released (no sleep)", share))
    rows.append(Row(TRAIN, "gradients", f"gradients, adapters only ({s.storage_dtype})", adapters * sb))
    if sb > cb:
        rows.append(
            Row(TRAIN, "autocast_copies", f"autocast adapter copies ({s.compute_dtype})", adapters * cb)
        )
    # the base is in the compute dtype: a 16-bit model's activations (no autocast casts, 16-bit residual)
    kwargs = {"residual_bytes": cb, "autocast": False, "flash_attention": s.flash_attention}
    mb, seq = s.micro_batch_size, s.sequence_length
    extra = shape.num_layers * seq * mb * s.lora_rank * cb * lora_projection_count(s.lora_targets)
    on = activation_bytes(seq, mb, shape, cb, checkpointing=True, **kwargs) + extra // shape.num_layers
    off = activation_bytes(seq, mb, shape, cb, checkpointing=False, **kwargs) + extra
    # the activations include the r-wide adapter intermediates
    return rows + _activation_and_logit_rows(shape, s, on, off)


def _finish_plan(shape: ModelShape, s: PlanSettings, params: int, rows: list[Row]) -> MemoryPlan:
    """Add the rollout phases to the held and training rows; sum each phase's peak."""
    vllm = None
    if s.rollout_engine == "vllm":
        share = int(s.gpu_memory_utilization * s.gpu_bytes)
        weights = params * 2
        budget = share - weights
        per_seq = shape.kv_bytes_per_token(2) * s.sequence_length
        vllm = VLLMBudget(share, weights, budget, max(budget, 0) // per_seq)
    policy_phase = f"{ROLLOUT} ({s.rollout_engine})"
    rows += _rollout_rows(
        policy_phase, shape, s, s.policy_concurrent, params, vllm=vllm is not None, who="policy"
    )
    if vllm is not None:
        rows.append(
            Row(policy_phase, "vllm_weights", "(of which its bf16 weights)", vllm.weights_bytes, False)
        )
        rows.append(
            Row(policy_phase, "vllm_kv_budget", "(of which its KV budget)", vllm.kv_budget_bytes, False)
        )
        label = f"(full-length sequences it holds, {s.sequence_length} tokens)"
        rows.append(Row(policy_phase, "vllm_sequences", label, vllm.full_length_sequences, False, "count"))
    teacher_phase = f"{TEACHER_ROLLOUT} ({s.rollout_engine})"
    if s.has_teacher:
        rows += _rollout_rows(
            teacher_phase, shape, s, s.teacher_concurrent, params, vllm=vllm is not None, who="teacher"
        )

    held = sum(r.value for r in rows if r.phase == HELD and r.counted)
    phases = [TRAIN, policy_phase] + ([teacher_phase] if s.has_teacher else [])
    peaks = {
        p: held + sum(r.value for r in rows if r.phase == p and r.counted and r.unit == "bytes")
        for p in phases
    }
    return MemoryPlan(s, shape, params, tuple(rows), peaks, vllm)


def largest_fitting_rollout_batch(shape: ModelShape, s: PlanSettings) -> int | None:
    """The largest ``rollout.batch_size`` (≤ the configured one) whose plan fits; None if even 1 does not."""
    lo, hi = 0, s.rollout_batch_size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if build_plan(shape, dataclasses.replace(s, rollout_batch_size=mid)).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo or None


def best_vllm_utilization(shape: ModelShape, s: PlanSettings) -> float | None:
    """The largest ``rollout.gpu_memory_utilization`` (in hundredths) whose plan fits; None if none does."""
    for hundredths in range(100, 0, -1):
        u = hundredths / 100
        if build_plan(shape, dataclasses.replace(s, gpu_memory_utilization=u)).fits:
            return u
    return None


def verdict(plan: MemoryPlan) -> str:
    """One line: does the plan fit its GPU count, and if not, what to change."""
    s = plan.settings
    where = f"{s.gpus} × {s.gpu_memory_gib:g} GB ({s.strategy})"
    peak, usable = plan.peak_bytes / GIB, s.usable_bytes / GIB
    if plan.fits:
        return f"fits on {where}: YES, peak {peak:.1f} GiB per GPU ≤ {usable:.1f} GiB usable"
    if plan.peak_bytes > s.usable_bytes:
        line = (
            f"fits on {where}: NO, peak {peak:.1f} GiB per GPU > {usable:.1f} GiB usable ({plan.peak_phase})"
        )
    else:
        line = f"fits on {where}: NO, peak {peak:.1f} GiB per GPU ≤ {usable:.1f} GiB usable"
    if plan.vllm is not None and plan.vllm.full_length_sequences < 1:
        line += (
            f"{' but' if plan.peak_bytes <= s.usable_bytes else ';'} vLLM's share "
            f"({s.gpu_memory_utilization:g} × GPU) cannot hold its bf16 weights and one full-length sequence"
        )
    if plan.vllm is not None:
        u = best_vllm_utilization(plan.shape, s)
        if u is not None:
            budget = build_plan(plan.shape, dataclasses.replace(s, gpu_memory_utilization=u)).vllm
            held = budget.full_length_sequences if budget else 0
            return line + f"; fits with rollout.gpu_memory_utilization={u:.2f} ({held} full-length sequences)"
    train_alone = plan.phase_peaks[TRAIN]
    if train_alone > s.usable_bytes:
        line += f"; the training step alone needs {train_alone / GIB:.1f} GiB"
        if s.rollout_engine == "vllm" and not s.vllm_sleeps:
            line += " with vLLM's share kept (rollout.sleep_between_steps=true releases it)"
        return line
    if plan.vllm is not None:
        return line + "; no rollout.gpu_memory_utilization makes it fit"
    k = largest_fitting_rollout_batch(plan.shape, s)
    if k is None:
        return line + "; no rollout.batch_size makes it fit"
    return line + f"; fits with rollout.batch_size={k}"


# ----------------------------------------------------------------------------------------------- output
_ROW_ORDER = [
    "lora_params",
    "weights",
    "adapters",
    "optimizer",
    "teacher",
    "reference",
    "vllm_share_held",
    "gradients",
    "gathered",
    "autocast_copies",
    "activations",
    "activations_alt",
    "logits",
    "logprob_slices",
    "logprob_slice",
    *(f"{who}_{what}" for who in ("policy", "teacher") for what in ("gathered", "sequences", "kv_cache")),
    "vllm_share",
    "vllm_weights",
    "vllm_kv_budget",
    "vllm_sequences",
    "policy_generate_transient",
    "teacher_generate_transient",
]


def _cell(row: Row | None) -> str:
    if row is None:
        return "-"
    if row.unit == "count":
        return f"{row.value:,}"
    text = f"{row.value / GIB:.2f}"
    return f"({text})" if not row.counted else text


def format_table(plans: list[MemoryPlan], header: list[str]) -> str:
    """The plans side by side (one column per GPU count), GiB per GPU, then one verdict line per plan."""
    width, col = 46, 12
    lines = [*header, ""]
    lines.append(
        "per GPU, GiB".ljust(width)
        + "".join((f"{p.settings.gpus} GPU" + ("s" if p.settings.gpus > 1 else "")).rjust(col) for p in plans)
    )
    lines.append(" " * width + "".join(p.settings.strategy.rjust(col) for p in plans))
    phases: list[str] = []
    for p in plans:
        for r in p.rows:
            if r.phase not in phases:
                phases.append(r.phase)
    for phase in phases:
        lines.append(phase)
        keys: list[tuple[str, str]] = []
        for p in plans:
            keys += [(r.key, r.label) for r in p.rows if r.phase == phase and (r.key, r.label) not in keys]
        keys.sort(key=lambda k: _ROW_ORDER.index(k[0]) if k[0] in _ROW_ORDER else len(_ROW_ORDER))
        for key, label in keys:
            cells = [next((r for r in p.rows if r.phase == phase and r.key == key), None) for p in plans]
            lines.append(f"  {label}".ljust(width) + "".join(_cell(c).rjust(col) for c in cells))
        if phase != HELD:
            totals = [f"{p.phase_peaks[phase] / GIB:.2f}" if phase in p.phase_peaks else "-" for p in plans]
            lines.append(
                "  = peak in this phase (with held)".ljust(width) + "".join(t.rjust(col) for t in totals)
            )
    lines.append("")
    lines.append("peak per GPU".ljust(width) + "".join(f"{p.peak_bytes / GIB:.2f}".rjust(col) for p in plans))
    usable = "".join(f"{p.settings.usable_bytes / GIB:.2f}".rjust(col) for p in plans)
    lines.append(f"usable ({plans[0].settings.margin:.0%} margin kept free)".ljust(width) + usable)
    lines.append("fits".ljust(width) + "".join(("yes" if p.fits else "NO").rjust(col) for p in plans))
    lines.append("")
    lines.extend(f"strategy on {p.settings.gpus} GPU(s): {p.settings.strategy_reason}" for p in plans)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadedShape:
    shape: ModelShape
    source: str  # where the config.json came from


def load_model_shape(name_or_path: str, model_config: str | Path | None = None) -> LoadedShape:
    """The model's shape from its ``config.json``: ``model_config`` (a file or a directory) when given,
    else the configured model (``builtin:`` names are built, hub ids must be in the local cache offline)."""
    from transformers import AutoConfig

    if model_config is not None:
        p = Path(model_config)
        file = p / "config.json" if p.is_dir() else p
        if not file.is_file():
            raise ConfigError(f"--model-config {model_config}: no config.json there")
        try:
            raw = json.loads(read_text(file, "JSON (a transformers model config)"))
            config = AutoConfig.for_model(**raw)
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"--model-config {file}: not a transformers model config ({err})") from err
        return LoadedShape(ModelShape.from_config(config), str(file))

    from corewarding.models.builtin import resolve_model_path

    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model {name_or_path!r}: its config.json could not be read ({str(err).splitlines()[0]}). "
            "Offline, a hub id must already be in the local cache; pass --model-config PATH (a config.json "
            "or a model directory) or set model.name_or_path to a local directory"
        ) from err
    return LoadedShape(ModelShape.from_config(config), path)
