"""The GRPO training loop: sample → roll out → score → advantages → update → (teacher EMA).

Nothing here depends on which reward method runs. The loop asks the registry for the method and reads its
flags to know whether to train on both views (``needs_rephrased``), sample from a teacher
(``needs_teacher``) or compute full-vocabulary token statistics before scoring (``needs_token_stats``).

Processes come from ``accelerate``: each process owns whole questions (both views and their teacher
rollouts), so rewards are always computed on complete groups; gradients are averaged by DDP and the
token-mean loss is normalised by the global token count, so one process or eight give the same update.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from corewarding.config import Config, save_config
from corewarding.data.question import Question
from corewarding.errors import ConfigError
from corewarding.rewards import RolloutGroup, get_reward_method, score_step
from corewarding.rollout.types import Rollout, SamplingParams
from corewarding.training.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    load_weights_into,
    optimizer_shard_path,
    save_checkpoint,
    staging_dir,
)
from corewarding.training.grpo import group_advantages, policy_loss
from corewarding.training.logprobs import pack, response_forward
from corewarding.training.run_log import RunLogger, truncate_metrics
from corewarding.training.sampler import StepSampler
from corewarding.training.sharding import full_parameters, full_state_dict, is_sharded
from corewarding.training.teacher import EMATeacher

Item = tuple[Question, Question | None]  # (original, rephrased twin or None)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_metrics: dict[str, Any]
    final_validation: dict[str, float] | None


def _seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is a dependency, but seeding it is only a courtesy
        pass


def _lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float):
    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


class Trainer:
    """One training run, configured entirely by a validated :class:`Config`."""

    def __init__(self, cfg: Config, accelerator=None, progress: bool = True):
        from accelerate import Accelerator

        self.cfg = cfg
        # without a GPU, cpu=True is what lets accelerate run several CPU processes over gloo
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.progress = progress and self.accelerator.is_main_process
        self.method = get_reward_method(cfg.method, **self._reward_options())
        self.run_dir = cfg.run_dir
        self.resume_from = latest_checkpoint(self.run_dir) if cfg.resume else None
        if not cfg.resume and (self.run_dir / "metrics.jsonl").exists():
            raise ConfigError(
                f"run directory {self.run_dir} already holds a run; pass resume=true to continue it, or choose "
                "another trainer.run_name / trainer.output_dir (nothing there was changed)"
            )
        world = self.accelerator.num_processes
        if cfg.trainer.batch_questions % world:
            raise ConfigError(
                f"trainer.batch_questions={cfg.trainer.batch_questions} must be divisible by the number of "
                f"processes ({world}) so every process owns the same number of whole question groups"
            )
        self._load_data()
        self._build_models()

    # ------------------------------------------------------------------ setup
    def _reward_options(self) -> dict[str, Any]:
        from corewarding.rewards import REGISTRY

        cls = REGISTRY.get(self.cfg.method)
        accepted = getattr(cls, "option_defaults", {}) if cls else {}
        opts = {k: v for k, v in asdict(self.cfg.reward).items() if k in accepted}
        return opts

    @property
    def uses_pairs(self) -> bool:
        cfg = self.cfg
        return bool(
            self.method.needs_rephrased
            or cfg.data.view == "rephrased"
            or (self.method.needs_teacher and cfg.teacher.view == "rephrased")
        )

    def _load_data(self) -> None:
        from corewarding.data import load_pairs, load_questions
        from corewarding.data.paths import resolve_data_path

        cfg = self.cfg
        sp = cfg.data.system_prompt
        if self.uses_pairs:
            pairs = load_pairs(
                resolve_data_path(cfg.data.train),
                resolve_data_path(cfg.data.train_rephrased),
                system_prompt=sp,
                limit=cfg.data.limit,
            )
            self.items: list[Item] = [(a, b) for a, b in pairs]
        else:
            qs = load_questions(resolve_data_path(cfg.data.train), limit=cfg.data.limit, system_prompt=sp)
            self.items = [(q, None) for q in qs]
        self.val_questions: list[Question] = []
        if cfg.data.val:
            self.val_questions = load_questions(
                resolve_data_path(cfg.data.val), limit=cfg.data.val_limit, system_prompt=sp
            )

    def _build_models(self) -> None:
        from corewarding.models.loading import load_model_and_tokenizer
        from corewarding.rollout.factory import make_engine

        cfg, acc = self.cfg, self.accelerator
        model, self.tokenizer = load_model_and_tokenizer(
            cfg.model.name_or_path, device=acc.device, dtype=cfg.model.dtype
        )
        self.items = self._filter_long_prompts(self.items)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        model.train()
        self.teacher: EMATeacher | None = None
        self.ref_model = None
        if self.method.needs_teacher:
            self.teacher = EMATeacher(
                model,
                ema_enabled=cfg.teacher.ema,
                update_interval=cfg.teacher.update_interval,
                a_start=cfg.teacher.a_start,
                a_end=cfg.teacher.a_end,
                # a ≈ 1e-4 updates round away in 16-bit weights: keep the teacher in fp32
                dtype=torch.float32 if model.dtype in (torch.bfloat16, torch.float16) else None,
            )
            if cfg.grpo.kl_coef > 0:
                self.ref_model = self.teacher.model  # the paper: the teacher is also the KL reference
        elif cfg.grpo.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)

        if self.resume_from is not None:
            # before any wrapping, so sharded strategies see the resumed weights; the KL reference above
            # stays the initial policy, the teacher takes its own saved weights
            load_weights_into(model, self.resume_from[1])
            if self.teacher is not None:
                load_weights_into(self.teacher.model, self.resume_from[1] / "teacher")

        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.optim.lr,
            betas=tuple(cfg.optim.betas),
        )
        total_updates = cfg.trainer.total_steps * cfg.grpo.updates_per_step
        warmup = int(cfg.optim.warmup_ratio * total_updates)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(cfg.optim.schedule, warmup, total_updates, cfg.optim.min_lr_ratio)
        )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.policy = acc.unwrap_model(self.model)
        self.engine = make_engine(
            cfg.rollout.engine,
            self.policy,
            self.tokenizer,
            batch_size=cfg.rollout.batch_size,
            max_prompt_length=cfg.data.max_prompt_length,
        )
        self.teacher_engine = None
        if self.teacher is not None:
            self.teacher_engine = make_engine(
                "hf",
                self.teacher.model,
                self.tokenizer,
                batch_size=cfg.rollout.batch_size,
                max_prompt_length=cfg.data.max_prompt_length,
            )
        self.pad_id = self.tokenizer.pad_token_id

    def _filter_long_prompts(self, items: list[Item]) -> list[Item]:
        from corewarding.data import filter_by_prompt_length, filter_pairs_by_prompt_length

        max_len = self.cfg.data.max_prompt_length
        if self.uses_pairs:
            kept, _ = filter_pairs_by_prompt_length([(a, b) for a, b in items], self.tokenizer, max_len)
            return [(a, b) for a, b in kept]
        kept, _ = filter_by_prompt_length([a for a, _ in items], self.tokenizer, max_len)
        return [(q, None) for q in kept]

    # ------------------------------------------------------------------ groups
    def _views_for(self, item: Item) -> list[tuple[str, Question]]:
        original, rephrased = item
        if self.method.needs_rephrased:
            assert rephrased is not None
            return [("original", original), ("rephrased", rephrased)]
        if self.cfg.data.view == "rephrased":
            assert rephrased is not None
            return [("rephrased", rephrased)]
        return [("original", original)]

    def _pair_id(self, item: Item) -> str:
        return str(item[0].extra.get("pair_id", item[0].id))

    def _sampling(self, step: int, temperature: float, max_new_tokens: int, salt: int) -> SamplingParams:
        cfg = self.cfg
        seed = cfg.trainer.seed * 1_000_003 + step * 1009 + salt * 101 + self.accelerator.process_index
        return SamplingParams(
            temperature=temperature,
            top_p=cfg.rollout.top_p,
            top_k=cfg.rollout.top_k,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )

    def _rollout_groups(self, step: int, items: list[Item]) -> list[RolloutGroup]:
        cfg = self.cfg
        G = cfg.rollout.n
        views = [(self._pair_id(it), view, q) for it in items for view, q in self._views_for(it)]
        with full_parameters(self.accelerator, self.model):
            rollouts = self.engine.generate(
                [q.messages for _, _, q in views],
                G,
                self._sampling(step, cfg.rollout.temperature, cfg.rollout.max_new_tokens, salt=1),
            )
        groups = [
            RolloutGroup(question=q, view=view, pair_id=pid, rollouts=rollouts[i * G : (i + 1) * G])
            for i, (pid, view, q) in enumerate(views)
        ]
        if self.teacher_engine is not None:
            Gt = cfg.teacher.n
            tq = [it[1] if cfg.teacher.view == "rephrased" else it[0] for it in items]
            t_rollouts = self.teacher_engine.generate(
                [q.messages for q in tq],
                Gt,
                self._sampling(step, cfg.rollout.temperature, cfg.rollout.max_new_tokens, salt=2),
            )
            by_pair = {self._pair_id(it): t_rollouts[i * Gt : (i + 1) * Gt] for i, it in enumerate(items)}
            for g in groups:
                g.teacher_rollouts = by_pair[g.pair_id]
        return groups

    # ------------------------------------------------------------------ forward helpers
    def _micro_batches(self, rollouts: list[Rollout]) -> list[list[int]]:
        mb = self.cfg.optim.micro_batch_size
        idx = list(range(len(rollouts)))
        return [idx[i : i + mb] for i in range(0, len(idx), mb)]

    @torch.no_grad()
    def _no_grad_pass(self, model, rollouts: list[Rollout], with_stats: bool) -> list[dict[str, Any]]:
        """Per-rollout log-probs (and mean token stats) without gradient, micro-batch by micro-batch."""
        out: list[dict[str, Any]] = [{} for _ in rollouts]
        temp = self.cfg.rollout.temperature
        for mb in self._micro_batches(rollouts):
            batch = pack([rollouts[i] for i in mb], self.pad_id).to(self.accelerator.device)
            fo = response_forward(model, batch, temperature=temp, with_stats=with_stats)
            for row, i in enumerate(mb):
                n = int(batch.response_mask[row].sum().item())
                out[i]["logprobs"] = fo.logprobs[row, :n].float().cpu()
                if with_stats:
                    m = batch.response_mask[row]
                    denom = m.sum().clamp(min=1)
                    out[i]["entropy"] = float((fo.entropy[row] * m).sum() / denom)
                    out[i]["self_certainty"] = float((fo.self_certainty[row] * m).sum() / denom)
        return out

    # ------------------------------------------------------------------ update
    def _update(
        self, rollouts: list[Rollout], advantages: list[float], old: list[dict] | None
    ) -> dict[str, float]:
        cfg, acc = self.cfg, self.accelerator
        U = cfg.grpo.updates_per_step
        n = len(rollouts)
        stats: dict[str, list[float]] = {}
        per_update = n // U if n % U == 0 else math.ceil(n / U)
        for u in range(U):
            idx = list(range(u * per_update, min(n, (u + 1) * per_update)))
            local_tokens = torch.tensor(
                float(sum(len(rollouts[i].response_ids) for i in idx)), device=acc.device
            )
            global_tokens = acc.reduce(local_tokens.clone(), reduction="sum").item()
            num_seqs_global = len(idx) * acc.num_processes
            mbs = [
                idx[i : i + cfg.optim.micro_batch_size]
                for i in range(0, len(idx), cfg.optim.micro_batch_size)
            ]
            for k, mb in enumerate(mbs):
                batch = pack([rollouts[i] for i in mb], self.pad_id).to(acc.device)
                sync = k == len(mbs) - 1
                ctx = contextlib.nullcontext() if sync else acc.no_sync(self.model)
                with ctx:
                    fo = response_forward(
                        self.model,
                        batch,
                        temperature=cfg.rollout.temperature,
                        with_stats=not self.method.needs_token_stats,
                    )
                    if old is not None:
                        old_lp = torch.zeros_like(fo.logprobs)
                        for row, i in enumerate(mb):
                            lp = old[i]["logprobs"]
                            old_lp[row, : lp.numel()] = lp.to(old_lp.device)
                    else:
                        old_lp = fo.logprobs.detach()
                    ref_lp = None
                    if self.ref_model is not None:
                        with torch.no_grad():
                            ref_lp = response_forward(
                                self.ref_model, batch, temperature=cfg.rollout.temperature
                            ).logprobs
                    adv = torch.tensor([advantages[i] for i in mb], dtype=torch.float32, device=acc.device)
                    loss, m = policy_loss(
                        fo.logprobs,
                        old_lp,
                        adv,
                        batch.response_mask,
                        clip_ratio=cfg.grpo.clip_ratio,
                        ref_logprobs=ref_lp,
                        kl_coef=cfg.grpo.kl_coef,
                        loss_agg=cfg.grpo.loss_agg,
                        num_tokens_total=global_tokens,
                        num_seqs_total=num_seqs_global,
                    )
                    # DDP averages gradients over processes; the loss is already a global mean
                    acc.backward(loss * acc.num_processes)
                for key, val in m.items():
                    stats.setdefault(key, []).append(float(val))
                if fo.entropy is not None:
                    mask = batch.response_mask
                    stats.setdefault("token_entropy", []).append(
                        float((fo.entropy * mask).sum() / mask.sum().clamp(min=1))
                    )
                    stats.setdefault("self_certainty", []).append(
                        float((fo.self_certainty * mask).sum() / mask.sum().clamp(min=1))
                    )
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            stats.setdefault("grad_norm", []).append(float(grad_norm))
            stats.setdefault("lr", []).append(self.scheduler.get_last_lr()[0])
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {k: sum(v) / len(v) for k, v in stats.items()}

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        from accelerate.utils import gather_object

        from corewarding.evaluation.evaluate import generate_completions, score_completions

        cfg, acc = self.cfg, self.accelerator
        if not self.val_questions:
            return {}
        shard = self.val_questions[acc.process_index :: acc.num_processes]
        max_new = cfg.validation.max_new_tokens or cfg.rollout.max_new_tokens
        sampling = SamplingParams(
            temperature=cfg.validation.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=max_new,
            seed=cfg.trainer.seed + 17 + acc.process_index,
        )
        with full_parameters(acc, self.model):
            completions = generate_completions(
                self.engine, shard, cfg.validation.n, sampling, progress=False, desc="validation"
            )
        completions = gather_object(completions) if acc.num_processes > 1 else completions
        result = score_completions(
            self.val_questions, completions, k=cfg.validation.n, exact_vote=cfg.reward.exact_vote
        )
        return {f"val/{k}": v for k, v in result.metrics.items()}

    # ------------------------------------------------------------------ loop
    def _resume(self) -> int:
        """Optimizer, scheduler and metrics of the checkpoint whose weights ``_build_models`` loaded."""
        if self.resume_from is None:
            return 0
        step, path = self.resume_from
        load_trainer_state(path, self.optimizer, self.scheduler, rank=self.accelerator.process_index)
        if self.accelerator.is_main_process:
            truncate_metrics(self.run_dir / "metrics.jsonl", step)
            (self.run_dir / "rollouts").mkdir(exist_ok=True)
        self.accelerator.wait_for_everyone()
        return step

    def _write_samples(self, step: int, groups: list[RolloutGroup], scores) -> None:
        """A few rollouts of the step; with several processes each writes its own file (its own groups)."""
        k = self.cfg.trainer.sample_rollouts
        acc = self.accelerator
        if k <= 0:
            return
        rows = []
        for gi, g in enumerate(groups):
            for ri, r in enumerate(g.rollouts):
                if len(rows) >= k:
                    break
                rows.append(
                    {
                        "step": step,
                        "process": acc.process_index,
                        "pair_id": g.pair_id,
                        "group_size": g.size,
                        "question_id": g.question.id,
                        "view": g.view,
                        "question": g.question.question,
                        "response": r.text,
                        "answer": g.answers[ri] if g.answers else None,
                        "reward": scores.rewards[gi][ri],
                        "pseudo_label": scores.pseudo_labels[gi],
                        "gold": g.question.gold,
                        "truncated": r.truncated,
                        "correct": scores.correct[gi][ri],
                    }
                )
        suffix = f"-rank{acc.process_index}" if acc.num_processes > 1 else ""
        path = self.run_dir / "rollouts" / f"step-{step:06d}{suffix}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)

    @torch.no_grad()
    def _param_spread(self) -> float:
        """Largest difference between the processes' parameter digests (0 when DDP kept them in sync)."""
        digest = sum((i + 1) * p.detach().double().sum() for i, p in enumerate(self.policy.parameters()))
        digests = self.accelerator.gather(torch.as_tensor(digest, device=self.accelerator.device).reshape(1))
        return float(digests.max() - digests.min())

    def _reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        acc = self.accelerator
        if acc.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=acc.device)
        t = acc.reduce(t, reduction="mean")
        return dict(zip(keys, t.tolist(), strict=True))

    def train(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            (self.run_dir / "rollouts").mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        acc.wait_for_everyone()
        start = self._resume()
        logger = (
            RunLogger(
                self.run_dir,
                cfg.trainer.loggers if acc.is_main_process else [],
                OmegaConf.to_container(OmegaConf.structured(cfg)),
                cfg.trainer.run_name or cfg.method,
                cfg.trainer.wandb_project,
            )
            if acc.is_main_process
            else None
        )
        sampler = StepSampler(self.items, cfg.trainer.batch_questions, cfg.trainer.seed, cfg.data.shuffle)
        total = cfg.trainer.total_steps
        last_val: dict[str, float] | None = None
        if start == 0 and cfg.validation.before_training and self.val_questions:
            _seed_all(cfg.trainer.seed)
            last_val = self.validate()
            if logger:
                logger.log(0, last_val)
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"train {cfg.method}",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        metrics: dict[str, Any] = {}
        for step in range(start, total):
            _seed_all(cfg.trainer.seed * 7919 + step * 31 + acc.process_index)
            batch = sampler.batch(step)[acc.process_index :: acc.num_processes]
            t0 = time.perf_counter()
            groups = self._rollout_groups(step, batch)
            t_gen = time.perf_counter() - t0
            rollouts = [r for g in groups for r in g.rollouts]
            t1 = time.perf_counter()
            needs_old = cfg.grpo.updates_per_step > 1
            old = None
            if self.method.needs_token_stats or needs_old:
                old = self._no_grad_pass(self.model, rollouts, with_stats=self.method.needs_token_stats)
                if self.method.needs_token_stats:
                    for r, o in zip(rollouts, old, strict=True):
                        r.extra["entropy"] = o["entropy"]
                        r.extra["self_certainty"] = o["self_certainty"]
                if not needs_old:
                    old = None
            scores = score_step(self.method, groups)
            adv_rows = group_advantages(
                [torch.tensor(row, dtype=torch.float32) for row in scores.rewards], eps=cfg.grpo.adv_eps
            )
            advantages = [float(a) for row in adv_rows for a in row]
            t_score = time.perf_counter() - t1
            t2 = time.perf_counter()
            upd = self._update(rollouts, advantages, old)
            t_update = time.perf_counter() - t2
            if self.teacher is not None:
                with full_parameters(acc, self.model):
                    self.teacher.update(self.policy, step + 1, total)
            teacher_sets = {id(g.teacher_rollouts): g.teacher_rollouts for g in groups if g.teacher_rollouts}
            n_tokens = sum(r.num_response_tokens for r in rollouts) + sum(
                t.num_response_tokens for ts in teacher_sets.values() for t in ts
            )
            lengths = [r.num_response_tokens for r in rollouts]
            local = {
                **scores.metrics,
                **upd,
                "response_length/mean": sum(lengths) / len(lengths),
                "response_length/clip_frac": sum(r.truncated for r in rollouts) / len(rollouts),
                "reward/mean": sum(sum(row) for row in scores.rewards) / max(1, len(rollouts)),
                "time/generation": t_gen,
                "time/scoring": t_score,
                "time/update": t_update,
                "throughput/rollout_tokens_per_s": n_tokens / max(t_gen, 1e-9),
            }
            if self.method.needs_token_stats:
                local["token_entropy"] = sum(r.extra["entropy"] for r in rollouts) / len(rollouts)
                local["self_certainty"] = sum(r.extra["self_certainty"] for r in rollouts) / len(rollouts)
            if torch.cuda.is_available():
                local["memory/peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
            metrics = self._reduce(local)
            if self.teacher is not None:
                metrics["teacher/ema_a"] = self.teacher.last_a
            done = step + 1
            if done == total and acc.num_processes > 1:
                metrics["dist/param_spread"] = self._param_spread()
            if cfg.trainer.val_every and self.val_questions and done % cfg.trainer.val_every == 0:
                last_val = self.validate()
                metrics.update(last_val)
            self._write_samples(done, groups, scores)
            if logger:
                logger.log(done, metrics)
            if cfg.trainer.save_every and (done % cfg.trainer.save_every == 0 or done == total):
                self.save(done)
            bar.update(1)
            bar.set_postfix(
                {
                    k: f"{metrics[k]:.3f}"
                    for k in (
                        "reward/mean",
                        "pseudo_label/accuracy",
                        "rollout/accuracy",
                        "val/avg@" + str(cfg.validation.n),
                    )
                    if k in metrics
                }
            )
        bar.close()
        if logger:
            logger.close()
            from corewarding.reporting.plots import plot_run

            plot_run(self.run_dir)
        acc.wait_for_everyone()
        return TrainResult(self.run_dir, total, metrics, last_val)

    def save(self, step: int) -> None:
        """Checkpoint ``step``; under FSDP/ZeRO-3 the weights are gathered and each process adds its
        optimizer shard, so every process must call this."""
        acc = self.accelerator
        sharded = is_sharded(acc)
        state_dict = full_state_dict(acc, self.model) if sharded else None
        staging = staging_dir(self.run_dir, step)
        if acc.is_main_process and staging.exists():
            shutil.rmtree(staging)  # left by a run killed while saving
        acc.wait_for_everyone()
        if sharded:
            staging.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), optimizer_shard_path(staging, acc.process_index))
        acc.wait_for_everyone()
        if acc.is_main_process:
            sampler_pos = StepSampler(
                self.items, self.cfg.trainer.batch_questions, self.cfg.trainer.seed, self.cfg.data.shuffle
            ).position(step)
            save_checkpoint(
                self.run_dir,
                step,
                self.policy,
                self.tokenizer,
                self.optimizer,
                self.scheduler,
                teacher_model=self.teacher.model if self.teacher is not None else None,
                extra={"data_position": sampler_pos, "method": self.cfg.method},
                keep=self.cfg.trainer.keep_checkpoints,
                state_dict=state_dict,
                optimizer_in_shards=sharded,
            )
        acc.wait_for_everyone()


def train(cfg: Config, progress: bool = True) -> TrainResult:
    """Build a :class:`Trainer` for ``cfg`` and run it."""
    return Trainer(cfg, progress=progress).train()
