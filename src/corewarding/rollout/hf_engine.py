"""Rollouts through Hugging Face ``generate``: batched, KV-cached, left-padded, stops at EOS.

This is the default engine for training, evaluation, ``solve`` and the local rephrasing backend. It
shares the policy module with the trainer, so ``sync_weights`` is free: the next ``generate`` already
samples from the updated weights.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from corewarding.data.prompting import prompt_token_ids
from corewarding.models.cache import cache_keyword, is_plain_cache, output_cache
from corewarding.rollout.types import Rollout, SamplingParams


class HFRolloutEngine:
    """Samples ``n`` responses per prompt with ``model.generate``.

    ``batch_size`` bounds how many sequences (prompts × n) go through ``generate`` at once. Each
    response keeps its EOS token in ``response_ids`` (the policy must learn to stop) and nothing after it.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 64,
        max_prompt_length: int | None = None,
        decode: str = "auto",
    ):
        if decode not in ("auto", "generate", "compact"):
            raise ValueError(f"decode={decode!r}: expected auto, generate or compact")
        self.decode = decode
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_prompt_length = max_prompt_length
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids: list[int] = []
        for value in (eos, gen_eos):
            if value is None:
                continue
            ids.extend(value if isinstance(value, (list, tuple)) else [value])
        self.eos_token_ids = sorted(set(ids))
        if not self.eos_token_ids:
            raise ValueError("tokenizer and model define no eos_token_id; generation could not stop")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> HFRolloutEngine:
        """Load a causal LM and tokenizer (hub id, local directory, or ``builtin:`` name)."""
        from corewarding.models.loading import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(name_or_path, device=device, dtype=dtype)
        model.eval()
        return cls(model, tokenizer, **kwargs)

    def sync_weights(self, model) -> None:
        """The engine samples from the module it holds; point it at ``model`` (usually the same object)."""
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompts(self, prompts: list[list[dict[str, str]]]) -> list[list[int]]:
        """Render chat messages (chat template, or plain text for a base model) and tokenize them.

        Uses ``prompt_token_ids``, the one rendering that length filtering and the vLLM engine use too, so
        "at most max_prompt_length tokens" means the same thing everywhere.
        """
        out = prompt_token_ids(self.tokenizer, prompts)
        if self.max_prompt_length is not None:
            # keep the end: the question and the generation prompt
            out = [
                ids[-self.max_prompt_length :] if len(ids) > self.max_prompt_length else ids for ids in out
            ]
        return out

    @torch.no_grad()
    def generate(
        self, prompts: list[list[dict[str, str]]], n: int, sampling: SamplingParams
    ) -> list[Rollout]:
        prompt_ids = self.encode_prompts(prompts)
        # sequence j answers prompt j // n; keep prompt groups contiguous
        jobs = [(i, ids) for i, ids in enumerate(prompt_ids) for _ in range(n)]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        rollouts: list[Rollout] = []
        with self._generation_mode():
            # sort by prompt length inside the call so batches pad little; results are put back in order
            order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][1]))
            results: dict[int, Rollout] = {}
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                for j, rollout in zip(
                    chunk, self._generate_batch([jobs[j] for j in chunk], sampling), strict=True
                ):
                    results[j] = rollout
            rollouts = [results[j] for j in range(len(jobs))]
        return rollouts

    @contextlib.contextmanager
    def _generation_mode(self) -> Iterator[None]:
        """Eval mode with the KV cache on for sampling; the caller's mode is restored afterwards."""
        was_training = self.model.training
        config = self.model.config
        old_cache = getattr(config, "use_cache", True)
        self.model.eval()
        config.use_cache = True
        try:
            yield
        finally:
            config.use_cache = old_cache
            if was_training:
                self.model.train()

    @torch.no_grad()
    def _shared_prompt_cache(self, input_ids: torch.Tensor, attention: torch.Tensor):
        """The KV cache of every prompt but its last token, computed once per distinct prompt, or None.

        A question's ``n`` rollouts share its prompt, so ``generate`` would run the same prefill ``n``
        times. Instead each distinct (left-padded) prompt is run once and its keys and values are copied to
        its rows; ``generate`` then only feeds the last prompt token. Positions follow ``generate``'s own
        rule (``cumsum - 1``, padding at 1), so the tokens sampled are the same as without sharing. Only a
        plain per-layer key/value cache can be expanded this way: other caches (sliding windows, hybrid
        or recurrent layers) return None and ``generate`` prefills as usual.
        """
        distinct, rows = torch.unique(input_ids, dim=0, return_inverse=True)
        if len(distinct) == len(input_ids) or input_ids.shape[1] < 2:
            return None
        mask = torch.zeros_like(distinct, dtype=attention.dtype)
        mask[rows] = attention
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        out = self.model(
            input_ids=distinct[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = output_cache(out)
        if not is_plain_cache(cache, rows=len(distinct)):
            return None
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)
        return cache

    def _generate_batch(self, jobs: list[tuple[int, list[int]]], sampling: SamplingParams) -> list[Rollout]:
        width = max(len(ids) for _, ids in jobs)
        input_ids = torch.full((len(jobs), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, (_, ids) in enumerate(jobs):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        do_sample = sampling.temperature > 0
        # Every knob is explicit: transformers fills unset (None) ones from the model's generation_config
        # and then from global defaults (top_k=50), so "no top-k" must be spelled top_k=0, and a
        # checkpoint's own defaults (Qwen ships top_k=20, repetition_penalty...) must not leak into RL
        # sampling or evaluation.
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "min_new_tokens": 0,
            "do_sample": do_sample,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
        }
        if do_sample:  # the warpers only act when sampling (and passing them to greedy only warns)
            kwargs.update(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=max(0, sampling.top_k),
                min_p=0.0,
                typical_p=1.0,
                epsilon_cutoff=0.0,
                eta_cutoff=0.0,
            )
        device = self.device
        input_ids, attention = input_ids.to(device), attention.to(device)
        cache = self._shared_prompt_cache(input_ids, attention)
        if self._use_compact(cache):
            return self._rollouts(jobs, self._decode_compact(input_ids, attention, cache, sampling))
        with warnings.catch_warnings():
            if cache is not None:
                # the name every transformers 5 accepts; recent ones also take ``cache=`` and warn here
                kwargs["past_key_values"] = cache
                warnings.filterwarnings(
                    "ignore", message=".*past_key_values.*deprecated", category=FutureWarning
                )
            sequences = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        return self._rollouts(jobs, sequences[:, width:].tolist())

    def _rollouts(self, jobs: list[tuple[int, list[int]]], generated: list[list[int]]) -> list[Rollout]:
        """Each row's tokens cut after its first EOS (kept); no EOS means truncated at the length limit."""
        eos = set(self.eos_token_ids)
        rollouts = []
        for (prompt_index, ids), tokens in zip(jobs, generated, strict=True):
            response: list[int] = []
            truncated = True
            for tok in tokens:
                response.append(tok)
                if tok in eos:
                    truncated = False
                    break
            text = self.tokenizer.decode(response, skip_special_tokens=True)
            rollouts.append(
                Rollout(
                    prompt_ids=list(ids),
                    response_ids=response,
                    text=text,
                    truncated=truncated,
                    prompt_index=prompt_index,
                )
            )
        return rollouts

    # ------------------------------------------------------------------ compact decoding
    def _use_compact(self, cache) -> bool:
        """Compact decoding needs a plain ``DynamicCache`` (rows can be dropped from it) and is used where
        it was measured faster: on CPU. ``decode`` forces one path."""
        if self.decode == "generate" or cache is None:
            return False
        if not is_plain_cache(cache):
            return False
        return self.decode == "compact" or self.device.type == "cpu"

    def _decode_compact(
        self, input_ids: torch.Tensor, attention: torch.Tensor, cache, sampling: SamplingParams
    ) -> list[list[int]]:
        """Sample like ``generate`` (same positions, same warpers from transformers, same sampler) but drop
        each row from the batch and its cache as soon as it emits EOS.

        ``generate`` keeps computing finished rows until the longest one ends; with responses of unequal
        length (micro-world: 33 tokens on average, the longest 45-64) a quarter of its decode work is for
        rows already done. The random draws follow ``generate``'s (see the sampling step), so under the
        same seed the same tokens come out, up to logits that differ in the last bit with the batch size.
        """
        from transformers import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        do_sample = sampling.temperature > 0
        warpers = LogitsProcessorList()
        if do_sample and sampling.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if do_sample and sampling.top_k > 0:
            warpers.append(TopKLogitsWarper(sampling.top_k))
        if do_sample and sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(sampling.top_p))
        eos = torch.tensor(self.eos_token_ids, device=input_ids.device)
        positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
        # the shared-prompt cache holds every prompt token but the last, which the first step feeds
        step_ids, step_positions = input_ids[:, -1:], positions[:, -1:]
        batch = input_ids.shape[0]
        rows = torch.arange(batch, device=input_ids.device)
        out: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
        cache_arg = cache_keyword(self.model)
        for step in range(sampling.max_new_tokens):
            logits = (
                self.model(
                    input_ids=step_ids,
                    attention_mask=attention,
                    position_ids=step_positions,
                    use_cache=True,
                    logits_to_keep=1,
                    **{cache_arg: cache},
                )
                .logits[:, -1, :]
                .float()
            )
            if do_sample:
                probs = torch.softmax(warpers(step_ids, logits), dim=-1)
                # torch.multinomial(probs, 1) is argmax(probs / E), E ~ Exp(1) per entry; drawing E for
                # the whole original batch and keeping the live rows' draws consumes the random stream as
                # ``generate`` does, so dropping finished rows changes no sampled token
                noise = torch.empty((batch, probs.shape[-1]), device=probs.device).exponential_()
                tokens = (probs / noise.index_select(0, rows)).argmax(dim=-1)
            else:
                tokens = logits.argmax(dim=-1)
            for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
                out[row].append(token)
            if step == sampling.max_new_tokens - 1:
                break
            alive = ~torch.isin(tokens, eos)
            if not bool(alive.all()):
                keep = alive.nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                rows, tokens, attention = rows[keep], tokens[keep], attention[keep]
                step_positions = step_positions[keep]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
            step_ids, step_positions = tokens.unsqueeze(1), step_positions + 1
        return out
