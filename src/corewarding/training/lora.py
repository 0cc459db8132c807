"""LoRA through ``peft``: the policy trains low-rank adapters on a frozen base (``model.lora.r > 0``).

One copy of the base model serves every role:

* the **policy** is the base with its adapter (peft's ``default``), the only trainable weights;
* the **KL reference** is the same module inside peft's ``disable_adapter()`` (adapters bypassed): the
  initial policy, since peft starts every adapter with ``B = 0``, so no second model is loaded;
* Co-rewarding-II's **EMA teacher** is a second adapter, ``teacher``, on the same base: a copy of the
  policy's adapter tensors (a few MB), blended towards the policy's after each step and made the active
  adapter only while the teacher samples or scores (:func:`adapter_active`). The frozen teacher
  (``teacher.ema=false``) is the initial policy, i.e. the base with adapters disabled: no adapter at all.

The EMA runs over the adapter factors ``A`` and ``B``, not over the merged weights ``W + s·B·A``: the product
of averages is not the average of products, so the teacher is "base + EMA adapter", the natural LoRA
counterpart of the full-weight EMA (exact at the start, when the two adapters are equal).

Exports merge the adapter into the base weights (``W + s·B·A``, what peft's ``merge_and_unload`` computes)
tensor by tensor into a plain Hugging Face state dict (:func:`merged_state_dict`), so the live model is never
modified and no merged copy of the model is ever held on the accelerator.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from corewarding.errors import ConfigError

# every linear projection of the attention and MLP blocks of Qwen2/Qwen3/Llama/Mistral-style decoders
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
POLICY = "default"  # peft's name for the first adapter: the policy's, the trainable one
TEACHER = "teacher"  # Co-rewarding-II's EMA teacher adapter
ADAPTER_DIR = "adapter"  # checkpoint-N/adapter/: the policy's adapter in peft's save_pretrained format
UNSHARDED = ("none", "ddp")  # strategies LoRA runs under


def require_peft():
    """The ``peft`` module, or a ConfigError naming the extra that installs it."""
    try:
        import peft
    except ImportError as err:
        raise ConfigError(
            "model.lora.r > 0 trains LoRA adapters with peft, which is not installed: "
            "pip install 'corewarding[lora]' (or pip install 'peft>=0.13')"
        ) from err
    return peft


def lora_alpha(lora_cfg) -> float:
    """``model.lora.alpha``, where unset (None) means 2·r (scaling alpha / r = 2)."""
    return float(lora_cfg.alpha) if lora_cfg.alpha is not None else 2.0 * lora_cfg.r


def require_unsharded(strategy: str) -> None:
    """LoRA runs in one process or under DDP; FSDP2 and DeepSpeed ZeRO-3 are refused with a clear error."""
    if strategy not in UNSHARDED:
        raise ConfigError(
            f"model.lora.r > 0 is not supported with distributed.strategy={strategy} (FSDP2 / DeepSpeed "
            "ZeRO-3): the adapters, the adapter-only EMA teacher and the disabled-adapter reference assume "
            "unsharded modules. Launch LoRA with DDP (accelerate launch --config_file "
            "configs/accelerate/ddp.yaml, or distributed.strategy=ddp): each GPU holds the frozen base in the "
            "compute dtype and only the adapters train, so sharding buys little"
        )


def peft_lora_config(lora_cfg):
    peft = require_peft()
    targets = list(lora_cfg.target_modules)
    return peft.LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=lora_alpha(lora_cfg),
        lora_dropout=float(lora_cfg.dropout),
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


@contextlib.contextmanager
def peft_quiet() -> Iterator[None]:
    """Wrapping a model, peft reads transformers' deprecated ``is_gradient_checkpointing`` (a FutureWarning
    about peft's code, not ours): silenced for the block."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def apply_lora(model: nn.Module, lora_cfg, adapter_dtype: torch.dtype) -> nn.Module:
    """``peft.get_peft_model`` on ``model``: base frozen, the ``default`` adapter (``B = 0``, so the policy
    starts exactly at the base) trainable and stored in ``adapter_dtype``."""
    peft = require_peft()
    try:
        with peft_quiet():
            wrapped = peft.get_peft_model(model, peft_lora_config(lora_cfg))
    except ValueError as err:  # "Target modules {...} not found in the base model"
        raise ConfigError(
            f"model.lora.target_modules={list(lora_cfg.target_modules)}: {str(err).splitlines()[0]}"
        ) from err
    for p in wrapped.parameters():
        if p.requires_grad and p.dtype != adapter_dtype:
            p.data = p.data.to(adapter_dtype)
    return wrapped


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft's LoRA layers of ``model``'s base model, by their name in the base model."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    return {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}


def adapter_parameters(model: nn.Module, adapter: str) -> list[tuple[str, torch.Tensor]]:
    """``(name, parameter)`` of one adapter, in ``named_parameters`` order and naming."""
    marker = f".{adapter}."
    return [(n, p) for n, p in model.named_parameters() if marker in n and _is_adapter_name(n)]


def _is_adapter_name(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (the policy's adapter), by ``named_parameters`` name: the training state."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_named(
    model: nn.Module, state: dict[str, torch.Tensor], expected: Iterable[str], source: str
) -> None:
    """Copy ``state`` into ``model``'s parameters named ``expected``; every one must be there, nothing else."""
    params = dict(model.named_parameters())
    expected = list(expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {source} does not match the LoRA adapters (model.lora.r / target_modules changed?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name in expected:
            param, value = params[name], state[name]
            if tuple(param.shape) != tuple(value.shape):
                raise RuntimeError(
                    f"checkpoint {source}: {name} has shape {tuple(value.shape)}, the model's adapter "
                    f"{tuple(param.shape)} (model.lora.r changed?)"
                )
            param.copy_(value.to(device=param.device, dtype=param.dtype))


# ------------------------------------------------------------------------------------ the teacher adapter
def add_teacher_adapter(model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
    """A second adapter, ``teacher``, equal to the policy's, frozen, in ``dtype`` (fp32 for the EMA)."""
    model.add_adapter(TEACHER, copy.deepcopy(model.peft_config[POLICY]))
    with torch.no_grad():
        for teacher, policy in adapter_pairs(model):
            teacher.data = policy.detach().to(dtype=dtype, copy=True)
            teacher.requires_grad_(False)
    # add_adapter leaves the policy's adapter active; make sure it is also the only trainable one
    for name, p in model.named_parameters():
        p.requires_grad_(_is_adapter_name(name) and f".{POLICY}." in name)


def adapter_pairs(
    model: nn.Module, src: str = POLICY, dst: str = TEACHER
) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """``(dst parameter, src parameter)`` for every adapter tensor, matched layer by layer."""
    pairs: list[tuple[nn.Parameter, nn.Parameter]] = []
    for name, layer in lora_layers(model).items():
        for attr in layer.adapter_layer_names:
            holder = getattr(layer, attr, None)
            if holder is None or src not in holder or dst not in holder:
                continue
            a, b = holder[dst], holder[src]
            if isinstance(a, nn.Parameter):
                pairs.append((a, b))
                continue
            mine, theirs = dict(a.named_parameters()), dict(b.named_parameters())
            if mine.keys() != theirs.keys():
                raise ValueError(f"adapters {src!r} and {dst!r} differ in {name}.{attr}")
            pairs += [(mine[k], theirs[k]) for k in mine]
    if not pairs:
        raise ValueError(f"no adapter tensors shared by {src!r} and {dst!r}")
    return pairs


@contextlib.contextmanager
def adapter_active(model: nn.Module, adapter: str | None) -> Iterator[None]:
    """Inside the block ``model`` runs with ``adapter`` (None: adapters disabled, i.e. the base model);
    afterwards the policy's adapter is active and the only trainable one again. For no-grad use only: the
    policy adapter's ``requires_grad`` is off inside the block."""
    if adapter is None:
        with model.disable_adapter():
            yield
        return
    if adapter == POLICY:
        yield
        return
    model.set_adapter(adapter, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(POLICY)


def current_adapter(model: nn.Module) -> str | None:
    """The adapter ``model`` runs with now: None when adapters are disabled."""
    layers = lora_layers(model)
    if any(layer.disable_adapters for layer in layers.values()):
        return None
    active = model.active_adapter
    return active if isinstance(active, str) else active[0]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block (no LoRA dropout in a reference or teacher forward), then the old mode."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


# ------------------------------------------------------------------------------------ merged weights
def merged_items(
    model: nn.Module, items: Iterable[tuple[str, torch.Tensor]], adapter: str | None
) -> Iterator[tuple[str, torch.Tensor]]:
    """``items`` of the base model (named as in the peft-wrapped base: ``...q_proj.base_layer.weight``,
    ``...lora_A.default.weight``) as a plain transformers model names them, with ``adapter`` merged into
    each adapted weight (``W + s·B·A`` in the adapter's dtype, as ``merge_and_unload`` computes it);
    adapter tensors are dropped. ``adapter=None``: the base weights."""
    layers = lora_layers(model)
    for name, tensor in items:
        if _is_adapter_name(name):
            continue
        owner, _, leaf = name.rpartition(".")
        if owner.endswith(".base_layer") or owner == "base_layer":
            owner = owner[: -len("base_layer")].rstrip(".")
            layer = layers.get(owner)
            if (
                leaf == "weight"
                and adapter is not None
                and layer is not None
                and adapter in _adapters_of(layer)
            ):
                with torch.no_grad():
                    delta = layer.get_delta_weight(adapter)
                    tensor = tensor.detach().to(delta.dtype) + delta.to(tensor.device)
            name = f"{owner}.{leaf}" if owner else leaf
        yield name, tensor


def _adapters_of(layer: nn.Module) -> set[str]:
    names: set[str] = set()
    for attr in ("lora_A", "lora_embedding_A"):
        holder = getattr(layer, attr, None)
        if holder is not None:
            names.update(holder.keys())
    return names


def merged_state_dict(
    model: nn.Module, adapter: str | None, dtype: torch.dtype | None = None, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """The base model's full state dict with ``adapter`` merged in, each tensor moved to ``device`` and
    floating ones cast to ``dtype`` as soon as it is computed (one merged tensor at a time on the GPU)."""
    base = model.get_base_model()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in merged_items(model, base.state_dict().items(), adapter):
        cast = dtype if dtype is not None and tensor.is_floating_point() else None
        out[name] = tensor.detach().to(device=device, dtype=cast)
    return out


def save_adapter(model: nn.Module, adapter: str, directory) -> None:
    """``adapter`` in peft's ``save_pretrained`` format (``adapter_config.json``,
    ``adapter_model.safetensors``) directly in ``directory``."""
    import shutil
    import tempfile
    from pathlib import Path

    directory = Path(directory)
    if adapter == POLICY:
        model.save_pretrained(str(directory), selected_adapters=[POLICY])
        return
    # peft writes any other adapter to <dir>/<name>/: write there, then move it into place
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        model.save_pretrained(tmp, selected_adapters=[adapter])
        if directory.exists():
            shutil.rmtree(directory)
        shutil.move(str(Path(tmp) / adapter), str(directory))
