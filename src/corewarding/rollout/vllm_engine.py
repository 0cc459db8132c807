"""Rollouts through vLLM: the fast engine for GPUs, behind the same ``RolloutEngine`` interface.

vLLM's paged KV cache, continuous batching and prefix caching (a question's ``n`` rollouts share its
prompt) sample an order of magnitude faster than ``model.generate``, but vLLM holds its own copy of the
weights and cannot backpropagate. So the trainer keeps its policy module and, after every optimizer step,
``sync_weights`` pushes the policy's state dict into the vLLM model (and drops the prefix cache, whose
keys and values were computed with the old weights).

Prompts are rendered and tokenized exactly as :class:`~corewarding.rollout.hf_engine.HFRolloutEngine` does
(``corewarding.data.prompting.prompt_token_ids``) and handed to vLLM as token ids, so both engines see
identical prompts and return identical ``Rollout`` records: the response keeps its EOS token and
``truncated`` means "stopped at max_new_tokens". The vllm package is imported only when an engine is built,
with a clear error when it is missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from corewarding.data.prompting import prompt_token_ids
from corewarding.errors import ConfigError
from corewarding.rollout.types import Rollout, SamplingParams


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


class VLLMRolloutEngine:
    """Samples ``n`` responses per prompt with ``vllm.LLM.generate`` and ``SamplingParams(n=...)``.

    ``llm`` is a ``vllm.LLM``; ``tokenizer`` is the Hugging Face tokenizer used to render prompts (the
    same one the trainer uses). ``eos_token_ids`` are the ids generation stops at.
    """

    def __init__(
        self,
        llm,
        tokenizer,
        *,
        max_prompt_length: int | None = None,
        eos_token_ids: list[int] | None = None,
    ):
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.eos_token_ids = sorted(set(eos_token_ids or _eos_ids(tokenizer, None)))
        if not self.eos_token_ids:
            raise ValueError("tokenizer and model define no eos_token_id; generation could not stop")

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
        **llm_kwargs: Any,
    ) -> VLLMRolloutEngine:
        """Build a vLLM engine for a hub id, local directory or ``builtin:`` name.

        vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless already set) so that
        ``sync_weights`` can reach the model directly; ``seed`` seeds vLLM's sampler for the whole run.
        """
        from corewarding.models.builtin import resolve_model_path
        from corewarding.models.loading import load_tokenizer

        vllm = import_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        path = resolve_model_path(name_or_path)
        kwargs: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "dtype": _vllm_dtype(dtype),
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": True,
            **llm_kwargs,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        try:
            llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as err:
            raise ConfigError(f"vllm could not load model {name_or_path!r} ({err})") from err
        tokenizer = load_tokenizer(name_or_path)
        return cls(
            llm, tokenizer, max_prompt_length=max_prompt_length, eos_token_ids=_eos_ids(tokenizer, path)
        )

    @classmethod
    def for_model(
        cls, model, tokenizer, *, max_prompt_length: int | None = None, **kwargs: Any
    ) -> VLLMRolloutEngine:
        """A vLLM engine that samples from ``model`` (a Hugging Face module the trainer holds).

        vLLM can only load weights from a directory, so the model's own directory is used when its config
        names one, else the module is saved to a temporary directory first; either way the module's
        current weights are then synced in, so the engine starts from exactly the trainer's policy.
        """
        source = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        tmp: tempfile.TemporaryDirectory | None = None
        if not (source and (Path(source) / "config.json").is_file()):
            tmp = tempfile.TemporaryDirectory(prefix="corewarding-vllm-")
            model.save_pretrained(tmp.name)
            tokenizer.save_pretrained(tmp.name)
            source = tmp.name
        dtype = kwargs.pop("dtype", str(getattr(model, "dtype", "auto")).replace("torch.", ""))
        engine = cls.from_pretrained(source, dtype=dtype, max_prompt_length=max_prompt_length, **kwargs)
        engine.tokenizer = tokenizer
        engine.sync_weights(model)
        engine._tmp = tmp  # keep the directory alive as long as vLLM may read from it
        return engine

    def sync_weights(self, model) -> None:
        """Load ``model``'s state dict into the vLLM model and drop the now stale prefix cache."""
        module = getattr(model, "module", model)  # unwrap DDP/accelerate wrappers
        weights = [(name, tensor.detach()) for name, tensor in module.state_dict().items()]
        target = self._local_model()
        if target is not None:
            target.load_weights(weights)
        elif hasattr(self.llm, "apply_model"):
            self.llm.apply_model(lambda m: m.load_weights(weights))
        else:
            raise ConfigError(
                "cannot reach the vLLM model to sync weights; run vLLM in-process "
                "(VLLM_ENABLE_V1_MULTIPROCESSING=0) or upgrade vllm"
            )
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def _local_model(self):
        """The in-process vLLM model module, across vLLM's engine layouts, or None.

        V1 in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): ``llm_engine.engine_core.engine_core
        .model_executor``, which some versions also alias as ``llm_engine.model_executor`` (the V0 path);
        the driver worker is either the worker or a wrapper holding it in ``.worker``.
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
        if not prompts:
            return []
        prompt_ids = self.encode_prompts(prompts)
        params = self.sampling_params(n, sampling)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return rollouts_from_outputs(outputs, prompt_ids, n, self.eos_token_ids, self.tokenizer.eos_token_id)


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
