"""Rollouts through vLLM: the fast engine for GPUs, behind the same ``RolloutEngine`` interface.

vLLM's paged KV cache, continuous batching and prefix caching (a question's ``n`` rollouts share its
prompt) sample an order of magnitude faster than ``model.generate``, but vLLM holds its own copy of the
weights and cannot backpropagate. So the trainer keeps its policy module (possibly fp32 master weights,
possibly FSDP2-sharded) and, after every optimizer step and after a resume, ``sync_weights`` streams the
module's weights into the vLLM model, one gathered parameter at a time (and drops the prefix cache, whose
keys and values were computed with the old weights). The same engine samples the Co-rewarding-II teacher:
``sync_weights(teacher)``, generate, ``sync_weights(policy)``.

Colocated with training, vLLM's memory is released while the policy updates (``release_memory``, vLLM's
sleep mode) and taken back lazily: ``sync_weights`` wakes the weights only (so no KV cache is allocated
while the new weights arrive) and ``generate`` wakes the KV cache.

Prompts are rendered and tokenized exactly as :class:`~corewarding.rollout.hf_engine.HFRolloutEngine` does
(``corewarding.data.prompting.prompt_token_ids``) and handed to vLLM as token ids, so both engines see
identical prompts and return identical ``Rollout`` records: the response keeps its EOS token and
``truncated`` means "stopped at max_new_tokens". The vllm package is imported only when an engine is built,
with a clear error when it is missing.

The vLLM APIs used here, and where each comes from (read in vllm-project/vllm: ``vllm/entrypoints/llm.py``,
``vllm/v1/worker/gpu_worker.py``, ``vllm/model_executor/models/qwen2.py`` and ``qwen3.py``, and the pull
requests named):

- ``LLM(..., enable_sleep_mode=True)``, ``LLM.sleep(level)``, ``LLM.wake_up()``: vllm#11743, v0.7.0.
  Level 1 offloads the weights to CPU memory and discards the KV cache; level 2 discards both.
- ``LLM.wake_up(tags=["weights"] | ["kv_cache"])``: vllm#15500, v0.8.3. Older versions wake everything.
- Level 2 is only usable for weight updates from v0.8.5: vllm#16889 made ``Worker.sleep(level=2)`` back
  up the model's buffers (rotary ``cos_sin_cache``, which no checkpoint holds) and restore them on wake.
  verl makes the same cut (``verl/third_party/vllm/__init__.py``: ``VLLM_SLEEP_LEVEL = 2`` from 0.8.5).
- ``current_platform.is_sleep_mode_available()`` (``vllm/platforms/interface.py``): sleep mode needs the
  CUDA/ROCm memory pool; ``LLM(enable_sleep_mode=True)`` fails on other platforms.
- ``LLM.reset_prefix_cache()``: vllm#12284, v0.7.0.
- ``model.load_weights(Iterable[tuple[str, Tensor]])``: every vLLM model class; e.g. ``Qwen2Model``
  (which ``Qwen3Model`` extends) maps Hugging Face names through ``stacked_params_mapping``
  (``q_proj``/``k_proj``/``v_proj`` into ``qkv_proj``, ``gate_proj``/``up_proj`` into ``gate_up_proj``),
  skips ``rotary_emb.inv_freq``, and ``Qwen3ForCausalLM`` skips ``lm_head.`` when embeddings are tied. It
  copies each tensor into its own parameters (``weight_loader`` → ``copy_``), so it can be called many
  times with a few weights each (TRL's colocate mode loads one parameter per call).
- ``LLM.apply_model(func)``: vllm#10353 (Nov 2024), the fallback to reach the model when it is not in
  this process.
- ``distributed_executor_backend="external_launcher"``: vllm#12071; one in-process vLLM per training
  process under torchrun/accelerate, as TRL's ``vllm_mode="colocate"`` builds it.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from corewarding.data.prompting import prompt_token_ids
from corewarding.errors import ConfigError
from corewarding.rollout.types import Rollout, SamplingParams

# vLLM's CuMem pool tags (vllm/device_allocator/cumem.py): what sleep releases and wake_up(tags=) restores
WEIGHTS, KV_CACHE = "weights", "kv_cache"
# first vLLM whose level-2 sleep restores the model's buffers on wake (vllm#16889)
LEVEL2_SLEEP_SINCE = (0, 8, 5)
# prefixes wrappers add to parameter names that vLLM's checkpoint names do not have
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def import_vllm():
    """Import vllm, or raise a :class:`ConfigError` that says how to get it (or to use ``--engine hf``)."""
    try:
        import vllm
    except ImportError as err:
        raise ConfigError(
            "the vllm engine needs the 'vllm' package, which is not installed "
            "(pip install 'corewarding[vllm]' on a machine with a CUDA GPU), or use the transformers "
            f"engine (--engine hf / rollout.engine=hf); import error: {err}"
        ) from err
    return vllm


def _eos_ids(tokenizer, model_path: str | None) -> list[int]:
    """EOS ids from the tokenizer and the model's generation config: a chat model may stop on either."""
    ids: list[int] = []
    values: list[Any] = [tokenizer.eos_token_id]
    if model_path is not None:
        try:
            from transformers import GenerationConfig

            values.append(GenerationConfig.from_pretrained(model_path).eos_token_id)
        except OSError:
            pass
    for value in values:
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    return sorted(set(ids))


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    """``"0.8.5.post1"`` → ``(0, 8, 5)``; None when there is no leading numeric version."""
    if not text:
        return None
    parts: list[int] = []
    for piece in str(text).split("+")[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(parts) == 3:
            break
    return tuple(parts) if parts else None


def vllm_version(vllm) -> tuple[int, ...] | None:
    """The installed vLLM's version as a tuple, from ``vllm.__version__`` or the package metadata."""
    text = getattr(vllm, "__version__", None)
    if text is None:
        try:
            from importlib.metadata import version

            text = version("vllm")
        except Exception:
            return None
    return _version_tuple(text)


def sleep_mode_available(vllm) -> bool:
    """Whether this vLLM and platform offer sleep mode (``LLM.sleep``, v0.7.0, on CUDA/ROCm)."""
    if not callable(getattr(getattr(vllm, "LLM", None), "sleep", None)):
        return False
    try:
        from vllm.platforms import current_platform
    except ImportError:  # no platform layer to ask: trust LLM.sleep's presence
        return True
    check = getattr(current_platform, "is_sleep_mode_available", None)
    return bool(check()) if callable(check) else True


def deepest_safe_sleep_level(vllm) -> int:
    """2 (discard weights too) where vLLM restores the model's buffers after it, else 1 (weights to CPU).

    Level 2 needs ``sync_weights`` before the next ``generate``, which the engine enforces; before v0.8.5
    level 2 also left the rotary caches (buffers no checkpoint holds) as garbage, so only level 1 is safe.
    An unknown version (a source build) gets level 1: it costs CPU memory, never correctness.
    """
    version = vllm_version(vllm)
    return 2 if version is not None and version >= LEVEL2_SLEEP_SINCE else 1


def _world_size() -> int:
    """The number of training processes (1 without an initialized torch.distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype for a vLLM dtype name; None for ``auto`` (vLLM decides)."""
    return None if name == "auto" else getattr(torch, name)


def engine_dtype_for(model) -> str:
    """The dtype vLLM should run a copy of ``model`` in: bf16 for fp32 weights on a GPU, else theirs.

    The trainer keeps fp32 master weights for the optimizer; sampling from them in fp32 would double
    vLLM's memory and halve its speed for no gain (the paper's rollouts are bf16), so a CUDA fp32 module
    gets a bf16 engine. A CPU fp32 module (tests, tiny models) keeps fp32.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return "auto"
    if param.dtype == torch.float32 and param.device.type == "cuda":
        return "bfloat16"
    return _vllm_dtype(param.dtype)


def _unwrap(model) -> torch.nn.Module:
    """The module under DDP/accelerate-style ``.module`` wrappers (FSDP2 does not wrap)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def _checkpoint_name(name: str) -> str:
    """A parameter name as the checkpoint (and so vLLM's ``load_weights``) spells it."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _persistent_buffers(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The buffers ``state_dict`` would hold: non-persistent ones (rotary ``inv_freq`` and, in recent
    transformers, ``original_inv_freq``) are derived from the config, are never in a checkpoint, and vLLM's
    ``load_weights`` skips only ``rotary_emb.inv_freq`` — any other name would raise a KeyError there."""
    for prefix, sub in module.named_modules():
        skip = getattr(sub, "_non_persistent_buffers_set", set())
        for name, buf in sub.named_buffers(recurse=False):
            if buf is not None and name not in skip:
                yield (f"{prefix}.{name}" if prefix else name), buf


@functools.cache
def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.4 keeps it private
        try:
            from torch.distributed._tensor import DTensor
        except ImportError:
            return None
    return DTensor


def _is_dtensor(tensor) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(tensor, cls)


def iter_full_weights(model, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(checkpoint name, full tensor)`` for ``model``'s parameters and persistent buffers, one at a
    time, cast to ``dtype`` (None: as they are; the cast is elementwise, so it is done before any gather).

    A DTensor (an FSDP2 shard) is gathered with ``full_tensor()``, an all-gather over its mesh: every
    process must iterate the same module in the same order (``named_parameters`` order is the module's
    construction order, identical on all ranks). Only one gathered parameter exists at a time here; a
    CPU-offloaded shard is moved to its mesh's device first, as NCCL cannot gather CPU tensors.
    Tied parameters are yielded once (``named_parameters`` deduplicates), under their first name.
    A peft (LoRA) module yields its base model's weights with the active adapter merged in (``W + s·B·A``,
    one tensor at a time; none merged while its adapters are disabled), under the base model's names.
    """
    module = _unwrap(model)
    items: Iterable[tuple[str, torch.Tensor]] = (*module.named_parameters(), *_persistent_buffers(module))
    from corewarding.training.lora import is_peft_model

    if is_peft_model(module):
        from corewarding.training import lora

        base = module.get_base_model()
        base_items = (*base.named_parameters(), *_persistent_buffers(base))
        items = lora.merged_items(module, base_items, lora.current_adapter(module))
    with torch.no_grad():
        for name, tensor in items:
            value = tensor.detach()
            if dtype is not None and value.is_floating_point() and value.dtype != dtype:
                value = value.to(dtype)  # before the gather: half the traffic for an fp32 shard
            if _is_dtensor(value):
                mesh_device = value.device_mesh.device_type
                if value.device.type != mesh_device:
                    value = value.to(mesh_device)
                value = value.full_tensor()
            yield _checkpoint_name(name), value


def _batches(
    weights: Iterator[tuple[str, torch.Tensor]], max_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group ``weights`` into lists of at most ``max_bytes`` (a larger single tensor goes alone)."""
    batch: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights:
        nbytes = tensor.numel() * tensor.element_size()
        if batch and size + nbytes > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append((name, tensor))
        size += nbytes
    if batch:
        yield batch


class VLLMRolloutEngine:
    """Samples ``n`` responses per prompt with ``vllm.LLM.generate`` and ``SamplingParams(n=...)``.

    ``llm`` is a ``vllm.LLM``; ``tokenizer`` is the Hugging Face tokenizer used to render prompts (the
    same one the trainer uses). ``eos_token_ids`` are the ids generation stops at. ``dtype`` is the dtype
    of vLLM's weights (synced tensors are cast to it before they are handed over, halving what is
    gathered and buffered for an fp32 policy); None leaves the cast to vLLM's own ``copy_``.
    ``sleep_level`` is the vLLM sleep level ``release_memory`` uses (None: never sleep); the ``llm`` must
    then have been built with ``enable_sleep_mode=True``.
    """

    #: upper bound on the bytes of gathered weights handed to ``load_weights`` in one call
    sync_chunk_bytes: int = 1 << 30

    def __init__(
        self,
        llm,
        tokenizer,
        *,
        max_prompt_length: int | None = None,
        eos_token_ids: list[int] | None = None,
        dtype: torch.dtype | None = None,
        sleep_level: int | None = None,
    ):
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.eos_token_ids = sorted(set(eos_token_ids or _eos_ids(tokenizer, None)))
        if not self.eos_token_ids:
            raise ValueError("tokenizer and model define no eos_token_id; generation could not stop")
        if sleep_level not in (None, 1, 2):
            raise ValueError(f"sleep_level must be None, 1 or 2, got {sleep_level!r}")
        self.dtype = dtype
        self.sleep_level = sleep_level
        self._asleep: set[str] = set()  # the CuMem pools vLLM has released and not woken yet
        self._weights_stale = False  # vLLM's weights are garbage (level-2 sleep, failed sync)
        self._warned_no_sleep = False

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        max_prompt_length: int | None = None,
        enable_sleep_mode: bool = False,
        **llm_kwargs: Any,
    ) -> VLLMRolloutEngine:
        """Build a vLLM engine for a hub id, local directory or ``builtin:`` name.

        vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless already set) so that
        ``sync_weights`` can reach the model directly; ``seed`` seeds vLLM's sampler for the whole run.
        In a multi-process run (torch.distributed initialized, world size > 1) every process builds its own
        engine with ``distributed_executor_backend="external_launcher"``, vLLM's mode for one engine per
        already-launched process (what TRL's colocate mode does), unless ``llm_kwargs`` says otherwise.
        ``enable_sleep_mode`` asks for vLLM's sleep mode (see :meth:`release_memory`); a vLLM or platform
        without it builds without it, with a warning, and ``release_memory`` then does nothing.
        """
        from corewarding.models.builtin import resolve_model_path
        from corewarding.models.loading import load_tokenizer

        vllm = import_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        path = resolve_model_path(name_or_path)
        vllm_dtype = _vllm_dtype(dtype)
        kwargs: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "dtype": vllm_dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": True,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if _world_size() > 1:
            kwargs["distributed_executor_backend"] = "external_launcher"
        sleep_level = None
        if enable_sleep_mode:
            if sleep_mode_available(vllm):
                kwargs["enable_sleep_mode"] = True
                sleep_level = deepest_safe_sleep_level(vllm)
            else:
                warnings.warn(
                    "this vLLM (or platform) has no sleep mode (vLLM >= 0.7.0 on CUDA/ROCm); vLLM keeps "
                    "its weights and KV cache on the GPU while the policy updates",
                    RuntimeWarning,
                    stacklevel=2,
                )
        kwargs.update(llm_kwargs)
        try:
            llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as err:
            raise ConfigError(f"vllm could not load model {name_or_path!r} ({err})") from err
        tokenizer = load_tokenizer(name_or_path)
        return cls(
            llm,
            tokenizer,
            max_prompt_length=max_prompt_length,
            eos_token_ids=_eos_ids(tokenizer, path),
            dtype=_torch_dtype(vllm_dtype),
            sleep_level=sleep_level,
        )

    @classmethod
    def for_model(
        cls,
        model,
        tokenizer,
        *,
        max_prompt_length: int | None = None,
        dtype: str | torch.dtype | None = None,
        gpu_memory_utilization: float = 0.4,
        sleep_between_steps: bool = True,
        seed: int = 0,
        max_model_len: int | None = None,
        **llm_kwargs: Any,
    ) -> VLLMRolloutEngine:
        """A vLLM engine colocated with training that samples from ``model`` (a module the trainer holds).

        ``dtype`` defaults to :func:`engine_dtype_for` (bf16 for an fp32 module on a GPU: master weights
        must not make vLLM run in fp32). ``gpu_memory_utilization`` is vLLM's share of the GPU (the policy,
        its gradients and optimizer state need the rest); ``sleep_between_steps`` builds vLLM with sleep
        mode so the trainer can :meth:`release_memory` during the update.

        vLLM can only load weights from a directory, so the model's own directory is used when its config
        names one, else the module is saved to a temporary directory first (a sharded module cannot be:
        its directory or hub id is used); either way the module's current weights are then synced in, so the engine starts from
        exactly the trainer's policy. Under FSDP2 that sync gathers parameters: every process must call
        this together.
        """
        module = _unwrap(model)
        source = getattr(getattr(module, "config", None), "_name_or_path", "") or ""
        tmp: tempfile.TemporaryDirectory | None = None
        sharded = any(_is_dtensor(p) for p in module.parameters())
        if sharded and not source:
            raise ConfigError(
                "the vllm engine needs the model's directory or hub id (config._name_or_path) for a "
                "sharded (FSDP2) policy: a sharded module cannot be saved for vLLM to load"
            )
        # a sharded policy's hub id goes to vLLM as it is: the sync below replaces the weights it loads
        if not sharded and not (source and (Path(source) / "config.json").is_file()):
            tmp = tempfile.TemporaryDirectory(prefix="corewarding-vllm-")
            from corewarding.training.lora import is_peft_model

            # a LoRA policy: its base model's files (the sync below loads the adapted weights)
            if is_peft_model(module):
                from corewarding.training import lora
                from corewarding.training.checkpoint import export_pretrained

                base = module.get_base_model()
                dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())
                export_pretrained(base, Path(tmp.name), lora.merged_state_dict(module, None), dtype=dtype)
            else:
                module.save_pretrained(tmp.name)
            tokenizer.save_pretrained(tmp.name)
            source = tmp.name
        engine = cls.from_pretrained(
            source,
            dtype=_vllm_dtype(dtype) if dtype is not None else engine_dtype_for(module),
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_prompt_length=max_prompt_length,
            enable_sleep_mode=sleep_between_steps,
            **llm_kwargs,
        )
        engine.tokenizer = tokenizer
        engine.sync_weights(model)
        engine._tmp = tmp  # keep the directory alive as long as vLLM may read from it
        return engine

    # ------------------------------------------------------------------ memory
    def release_memory(self) -> None:
        """Give vLLM's GPU memory back for the policy update (vLLM's sleep mode).

        Sleeps at ``sleep_level``: 2 discards the weights too (nothing is copied to CPU), which is correct
        only because the trainer calls ``sync_weights`` before the next ``generate``; the engine enforces
        that (``generate`` raises until weights are synced). Level 1 (vLLM < 0.8.5) offloads the weights to
        CPU memory and restores them on wake. Without sleep mode (not asked, or an LLM without ``sleep``)
        this does nothing; the latter warns once.
        """
        if self.sleep_level is None or self._asleep == {WEIGHTS, KV_CACHE}:
            return
        sleep = getattr(self.llm, "sleep", None)
        if not callable(sleep):
            if not self._warned_no_sleep:
                self._warned_no_sleep = True
                warnings.warn(
                    "this vLLM has no sleep mode (LLM.sleep needs vLLM >= 0.7.0); release_memory() keeps "
                    "vLLM's weights and KV cache on the GPU",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        # half awake (synced, not sampled since): vLLM's allocator releases every pool it tracks, so the
        # rest is woken first rather than released twice
        self._wake((WEIGHTS, KV_CACHE))
        sleep(level=self.sleep_level)
        self._asleep = {WEIGHTS, KV_CACHE}
        if self.sleep_level >= 2:
            self._weights_stale = True

    def _wake(self, tags: tuple[str, ...]) -> None:
        """Wake the pools in ``tags`` that sleep; wake everything where ``wake_up`` takes no tags (< 0.8.3).

        Only pools that sleep are named: vLLM's ``CuMemAllocator.wake_up`` maps every allocation of the
        given tags (all of them for ``tags=None``) without checking whether it is mapped already, and its
        ``sleep`` releases every allocation; so the engine tracks which pools sleep itself.
        """
        wanted = [t for t in tags if t in self._asleep]
        if not wanted:
            return
        if torch.cuda.is_available():
            # the trainer's freed-but-cached blocks would otherwise keep the memory vLLM re-maps
            torch.cuda.empty_cache()
        wake_up = self.llm.wake_up
        if set(wanted) == self._asleep == {WEIGHTS, KV_CACHE}:
            wake_up()
            self._asleep = set()
        elif "tags" in inspect.signature(wake_up).parameters:
            wake_up(tags=wanted)
            self._asleep -= set(wanted)
        else:
            wake_up()
            self._asleep = set()

    # ------------------------------------------------------------------ weights
    def sync_weights(self, model) -> None:
        """Load ``model``'s current weights into vLLM and drop the now stale prefix cache.

        ``model`` may be the policy or the teacher (the same engine samples both), wrapped (``.module``),
        fp32 (tensors are cast to vLLM's dtype here) or FSDP2-sharded: each DTensor parameter is gathered
        with ``full_tensor()``, a collective, so every process must call ``sync_weights`` at the same point
        with the same module (each process then loads its own colocated engine). Parameters are streamed to
        vLLM's ``load_weights`` in batches of at most ``sync_chunk_bytes``, so no second full state dict is
        ever built. If vLLM sleeps, only its weights are woken first (the KV cache stays released until
        ``generate``).
        """
        self._wake((WEIGHTS,))
        target = self._local_model()
        if target is None and not hasattr(self.llm, "apply_model"):
            raise ConfigError(
                "cannot reach the vLLM model to sync weights; run vLLM in-process "
                "(VLLM_ENABLE_V1_MULTIPROCESSING=0) or upgrade vllm"
            )
        dtype = self.dtype if self.dtype is not None else _param_dtype(target)
        self._weights_stale = True  # a sync that fails half way leaves a mix of two models
        for batch in _batches(iter_full_weights(model, dtype), self.sync_chunk_bytes):
            if target is not None:
                target.load_weights(batch)
            else:
                self.llm.apply_model(lambda m, batch=batch: m.load_weights(batch))
        self._weights_stale = False
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def _local_model(self):
        """The in-process vLLM model module, across vLLM's engine layouts, or None.

        V1 in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): ``llm_engine.engine_core.engine_core
        .model_executor``, which some versions also alias as ``llm_engine.model_executor`` (the V0 path,
        and the one TRL's colocate mode uses); the driver worker is either the worker or a wrapper
        holding it in ``.worker``.
        """
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(getattr(engine, "engine_core", None), "engine_core", None)
        for executor in (getattr(core, "model_executor", None), getattr(engine, "model_executor", None)):
            worker = getattr(executor, "driver_worker", None)
            for candidate in (getattr(worker, "worker", None), worker):
                model = getattr(getattr(candidate, "model_runner", None), "model", None)
                if model is not None and hasattr(model, "load_weights"):
                    return model
        return None

    # ------------------------------------------------------------------ sampling
    def encode_prompts(self, prompts: list[list[dict[str, str]]]) -> list[list[int]]:
        """The prompts' token ids, rendered as everywhere else; over-long prompts keep their end."""
        ids = prompt_token_ids(self.tokenizer, prompts)
        if self.max_prompt_length is not None:
            ids = [x[-self.max_prompt_length :] if len(x) > self.max_prompt_length else x for x in ids]
        return ids

    def sampling_params(self, n: int, sampling: SamplingParams):
        """vLLM sampling parameters equivalent to ``sampling`` with ``n`` samples per prompt.

        ``seed`` is not passed per request (vLLM's run seed applies): a per-request seed would make every
        prompt of a call draw the same random stream.
        """
        vllm = import_vllm()
        greedy = sampling.temperature <= 0
        return vllm.SamplingParams(
            n=n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=-1 if greedy or sampling.top_k <= 0 else sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=list(self.eos_token_ids),
            skip_special_tokens=True,
        )

    def generate(
        self, prompts: list[list[dict[str, str]]], n: int, sampling: SamplingParams
    ) -> list[Rollout]:
        """Sample ``n`` responses per prompt, waking vLLM (weights and KV cache) first if it sleeps.

        Raises a RuntimeError when vLLM's weights were discarded (``release_memory`` at sleep level 2, or
        a sync that failed) and not synced since: sampling would silently draw from garbage weights.
        """
        if self._weights_stale:
            raise RuntimeError(
                "vLLM's weights were discarded (release_memory() put vLLM to sleep at level 2, or a "
                "sync_weights() failed) and have not been synced since; call engine.sync_weights(model) "
                "before engine.generate()"
            )
        if not prompts:
            return []
        self._wake((WEIGHTS, KV_CACHE))
        prompt_ids = self.encode_prompts(prompts)
        params = self.sampling_params(n, sampling)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return rollouts_from_outputs(outputs, prompt_ids, n, self.eos_token_ids, self.tokenizer.eos_token_id)


def _param_dtype(module) -> torch.dtype | None:
    """The dtype of ``module``'s first floating parameter (None for no module or no such parameter)."""
    if module is None or not hasattr(module, "parameters"):
        return None
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def rollouts_from_outputs(
    outputs, prompt_ids: list[list[int]], n: int, eos_token_ids: list[int], default_eos: int | None = None
) -> list[Rollout]:
    """Convert vLLM ``RequestOutput``s (one per prompt, ``n`` completions each) into grouped ``Rollout``s.

    vLLM may or may not include the stop token in ``token_ids`` depending on how generation stopped; the
    response is normalized so that one that finished (``finish_reason == "stop"`` on an EOS) ends with
    exactly one EOS token, as the transformers engine returns it (``default_eos``, else the smallest EOS id,
    when vLLM does not say which one it stopped on).
    """
    if len(outputs) != len(prompt_ids):
        raise RuntimeError(f"vllm returned {len(outputs)} outputs for {len(prompt_ids)} prompts")
    eos = set(eos_token_ids)
    fallback = default_eos if default_eos is not None else min(eos)
    rollouts: list[Rollout] = []
    for index, (output, ids) in enumerate(zip(outputs, prompt_ids, strict=True)):
        completions = sorted(output.outputs, key=lambda c: c.index)
        if len(completions) != n:
            raise RuntimeError(f"vllm returned {len(completions)} completions for a prompt, expected n={n}")
        for comp in completions:
            response = list(comp.token_ids)
            truncated = comp.finish_reason == "length"
            if comp.finish_reason == "stop" and (not response or response[-1] not in eos):
                # stopped on a stop id (stop_reason) or on the EOS (stop_reason None) that was left out
                reason = getattr(comp, "stop_reason", None)
                if reason is None or (isinstance(reason, int) and reason in eos):
                    response.append(reason if reason is not None else fallback)
            rollouts.append(
                Rollout(
                    prompt_ids=list(ids),
                    response_ids=response,
                    text=comp.text,
                    truncated=truncated,
                    prompt_index=index,
                )
            )
    return rollouts


def _vllm_dtype(dtype: Any) -> str:
    """vLLM accepts 'auto', 'float16', 'bfloat16', 'float32'; map our aliases and torch dtypes onto those."""
    text = str(dtype).replace("torch.", "") if dtype is not None else "auto"
    aliases = {
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "fp32": "float32",
        "float": "float32",
    }
    text = aliases.get(text, text)
    if text not in ("auto", "float16", "bfloat16", "float32"):
        raise ConfigError(f"dtype {dtype!r} is not supported by vllm; use auto, bfloat16, float16 or float32")
    return text
