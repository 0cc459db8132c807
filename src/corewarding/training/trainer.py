"""The GRPO training loop: sample → roll out → score → advantages → update → (teacher EMA).

Nothing here depends on which reward method runs. The loop asks the registry for the method and reads its
flags to know whether to train on both views (``needs_rephrased``), sample from a teacher
(``needs_teacher``) or compute full-vocabulary token statistics before scoring (``needs_token_stats``).

Processes come from ``accelerate``: each process owns whole questions (both views and their teacher
rollouts), so rewards are always computed on complete groups; gradients are averaged by DDP (or
reduce-scattered by FSDP2) and the token-mean loss is normalised by the global token count, so one process
or eight give the same update.

Precision: trainable weights and AdamW state stay fp32; forward and backward run in ``model.compute_dtype``
(bf16 on a GPU). Rollouts always come from the current weights: after every optimizer step the engine is
marked stale and synced before it samples again (the policy, the teacher, validation), whatever the engine.

What a run leaves on disk is kept trustworthy whatever happens to it:

- a non-finite loss or gradient norm stops the run before the optimizer step (every process agrees), so no
  checkpoint ever holds NaN or inf weights (:class:`TrainingDivergedError`; the step's arithmetic, from
  advantages to the optimizer step, is :mod:`corewarding.training.update`);
- ``resume=true`` continues from the newest *intact* checkpoint (checked against the manifest in its
  ``COMPLETE`` marker, falling back to an older one when loading still fails), drops the metrics and samples
  that the restarted run writes again, and refuses settings that change what the earlier steps mean unless
  ``trainer.allow_config_changes=true``; the config each stretch of steps ran with is kept
  (``config-step-N.yaml``, ``config_history.jsonl``);
- files are written through :mod:`corewarding.files` (atomic whole files, fsynced appends).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from corewarding.config import Config, save_config
from corewarding.data.question import Question
from corewarding.errors import ConfigError, CorewardingError, DataError
from corewarding.files import (
    append_jsonl,
    atomic_write_jsonl,
    atomic_write_text,
    read_text,
    require_output_dir,
)
from corewarding.models.loading import resolve_dtype
from corewarding.rewards import RolloutGroup, get_reward_method, score_step
from corewarding.rollout.engine import RolloutEngine
from corewarding.rollout.types import Rollout, SamplingParams
from corewarding.training import checkpoint as ckpt
from corewarding.training import update
from corewarding.training.logprobs import pack, response_forward
from corewarding.training.precision import autocast, compute_dtype, storage_dtype
from corewarding.training.run_log import RunLogger, flat_config, require_trackers, truncate_metrics
from corewarding.training.sampler import StepSampler
from corewarding.training.sharding import (
    deepspeed_launch,
    device_mesh,
    full_parameters,
    full_state_dict,
    launch_activation_checkpointing,
    launch_reshard_after_forward,
    resolve_strategy,
    shard_fsdp2,
)
from corewarding.training.teacher import AdapterEMATeacher, EMATeacher
from corewarding.training.update import TrainingDivergedError as TrainingDivergedError  # raised by the update

Item = tuple[Question, Question | None]  # (original, rephrased twin or None)

# Settings that resume=true may change without trainer.allow_config_changes: they do not change what the
# earlier steps computed (how long the run goes on, how often it validates and saves, where and how it
# reports, memory and speed knobs that leave the update the same). Every other key is refused when it
# differs from the run's config.yaml. ``resume`` itself is not a setting of the run and is not compared.
# total_steps: extending a run; the learning-rate schedule then spans the new total from the resumed step.
NEUTRAL_CHANGES = frozenset(
    {
        "trainer.total_steps",
        "trainer.val_every",
        "trainer.save_every",
        "trainer.keep_checkpoints",
        "trainer.loggers",
        "trainer.wandb_project",
        "trainer.sample_rollouts",
        "trainer.export_dtype",
        "trainer.push_to_hub",
        "trainer.hub_repo_id",
        "trainer.hub_private",
        "trainer.output_dir",
        "trainer.run_name",
        "trainer.allow_config_changes",
        "validation.before_training",
        "optim.micro_batch_size",
        "model.gradient_checkpointing",
        "rollout.batch_size",
        "rollout.gpu_memory_utilization",
        "rollout.sleep_between_steps",
        "distributed.reshard_after_forward",
    }
)
_ABSENT = "(absent)"
_SAMPLES = re.compile(r"^step-(\d+)(?:-rank\d+)?\.jsonl$")


class CheckpointError(CorewardingError):
    """No checkpoint of the run can be resumed from (every one is damaged or fails to load)."""


def _saved_config(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as a nested dict, with the schema's defaults for keys it lacks (a field added
    since it was written is then no change); as written when the schema no longer takes it."""
    text = read_text(path, "YAML")  # a DataError when the bytes are not UTF-8
    try:
        loaded = OmegaConf.create(text)
    except Exception as err:  # omegaconf / yaml: not valid YAML
        raise ValueError(f"not valid YAML ({_one_line(err)})") from None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), loaded)
        tree = OmegaConf.to_container(merged)
    except Exception:  # a key the schema does not know: compare the file as it is
        tree = OmegaConf.to_container(loaded)
    if not isinstance(tree, dict):
        raise ValueError("not a mapping of settings")
    return {str(k): v for k, v in tree.items()}


def _one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _notice(message: str) -> None:
    """One line for the user about a decision the run made on its own (stderr, like the CLI's errors)."""
    print(f"corewarding train: {message}", file=sys.stderr, flush=True)


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


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Raise one library logger's level to ERROR for the block."""
    import logging

    logger = logging.getLogger(logger_name)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _make_accelerator(deepspeed: bool, trackers: list[str] | None = None, run_dir: Path | None = None):
    """accelerate's processes and devices, with the precision left to the trainer (see ``__init__``), and its
    experiment ``trackers`` (``log_with``; TensorBoard's files under ``run_dir/tensorboard``).

    DeepSpeed is only driven with ``cpu=False``; on a machine without CUDA (DeepSpeed's CPU accelerator,
    what the tests run) accelerate then finds no backend and would report one process on every rank, so
    gloo is named explicitly.
    """
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    cuda = torch.cuda.is_available()
    handlers = [InitProcessGroupKwargs(backend="gloo")] if deepspeed and not cuda else []
    tracking: dict[str, Any] = {}
    if trackers:
        logging_dir = str(run_dir / "tensorboard") if run_dir is not None else None
        tracking = {
            "log_with": list(trackers),
            "project_config": ProjectConfiguration(logging_dir=logging_dir),
        }
    return Accelerator(
        cpu=not cuda and not deepspeed,
        step_scheduler_with_optimizer=False,
        mixed_precision=None if deepspeed else "no",
        kwargs_handlers=handlers,
        **tracking,
    )


class Trainer:
    """One training run, configured entirely by a validated :class:`Config`.

    ``engine_factory(model, tokenizer)`` replaces the configured rollout engine (tests use an engine that
    keeps its own copy of the weights, as vLLM does, to prove that every rollout sees the latest weights).
    """

    def __init__(
        self,
        cfg: Config,
        accelerator=None,
        progress: bool = True,
        engine_factory: Callable[[Any, Any], RolloutEngine] | None = None,
    ):
        self.cfg = cfg
        # The launch config's mixed_precision feeds model.compute_dtype=auto, but the autocast is ours (the
        # policy and its reference must run in the same precision): accelerate only keeps it for DeepSpeed,
        # which needs it in its own config. Without a GPU, cpu=True is what lets accelerate run several CPU
        # processes over gloo; the scheduler steps once per optimizer step whatever the number of processes.
        launch_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")
        # trainer.loggers' trackers (accelerate's), checked before anything loads: a missing package is a
        # ConfigError naming the extra to install
        self.trackers = require_trackers(cfg.trainer.loggers)
        # where the run writes, checked before anything loads: a regular file in the way or a folder that
        # cannot be written is one clear error instead of a traceback after minutes of loading
        require_output_dir(cfg.trainer.output_dir, "trainer.output_dir")
        require_output_dir(cfg.run_dir, "the run folder trainer.output_dir/trainer.run_name")
        self.accelerator = accelerator or _make_accelerator(deepspeed_launch(), self.trackers, cfg.run_dir)
        acc = self.accelerator
        self.strategy = resolve_strategy(cfg.distributed.strategy, acc)
        self.storage_dtype = storage_dtype(cfg.model.dtype)
        self.compute_dtype = compute_dtype(cfg.model.compute_dtype, acc.device, launch_precision)
        self.progress = progress and acc.is_main_process
        self.method = get_reward_method(cfg.method, **self._reward_options())
        self.run_dir = cfg.run_dir
        if not cfg.resume:
            self._refuse_existing_run()
        # the intact checkpoints to resume from, newest first (an older one is tried when loading fails)
        self._candidates = self._resume_candidates() if cfg.resume else []
        self.resume_from: tuple[int, Path] | None = self._candidates[0] if self._candidates else None
        self._config_changes = self._check_config_changes() if cfg.resume else {}
        world = acc.num_processes
        if cfg.trainer.batch_questions % world:
            raise ConfigError(
                f"trainer.batch_questions={cfg.trainer.batch_questions} must be divisible by the number of "
                f"processes ({world}) so every process owns the same number of whole question groups"
            )
        self._load_data()
        self._build_models(engine_factory)

    # ------------------------------------------------------------------ an earlier run in the folder
    def _refuse_existing_run(self) -> None:
        """Without resume=true, a folder that already holds a run (metrics or checkpoints) is refused."""
        held = [name for name in ("metrics.jsonl",) if (self.run_dir / name).exists()]
        held += [path.name for _, path in ckpt.checkpoint_dirs(self.run_dir)[-1:]]
        if held:
            raise ConfigError(
                f"run directory {self.run_dir} already holds a run ({', '.join(held)}); pass resume=true to "
                "continue it, or choose another trainer.run_name / trainer.output_dir (nothing there was "
                "changed)"
            )

    def _resume_candidates(self) -> list[tuple[int, Path]]:
        """The run's intact checkpoints, newest first; says so when there is none or the newest is damaged.

        A damaged checkpoint (a file of its manifest missing or truncated) is skipped with one line rather
        than loaded into a traceback; when every checkpoint is damaged the run stops with a clear error
        instead of silently starting over and dropping the metrics of the steps it had done.
        """
        found = ckpt.resumable_checkpoints(self.run_dir)
        if not found.intact and not found.damaged:
            if self.accelerator.is_main_process:
                _notice(f"resume=true, but there is no checkpoint in {self.run_dir}: starting from step 0")
            return []
        if not found.intact:
            raise CheckpointError(
                f"resume=true, but no checkpoint in {self.run_dir} is intact: "
                + "; ".join(f"{path.name}: {problem}" for _, path, problem in found.damaged)
                + ". Restore the files, or start a new run (another trainer.run_name)"
            )
        newest_step, newest = found.intact[0]
        skipped = [f"{path.name} ({problem})" for step, path, problem in found.damaged if step > newest_step]
        if skipped and self.accelerator.is_main_process:
            _notice(
                f"{', '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} damaged: resuming from "
                f"{newest.name}, the newest intact checkpoint"
            )
        return found.intact

    def _check_config_changes(self) -> dict[str, tuple[Any, Any]]:
        """The settings this resume changes against the run's ``config.yaml`` (key -> (old, new)).

        Changes to keys outside :data:`NEUTRAL_CHANGES` are refused when there is a checkpoint to continue
        (its steps ran with the old values) unless ``trainer.allow_config_changes``; without a checkpoint
        the run starts over from step 0 and any change is fine. Either way the changes are recorded before
        ``config.yaml`` is replaced (:meth:`_record_config_changes`).
        """
        path = self.run_dir / "config.yaml"
        if not path.is_file():
            return {}
        current = OmegaConf.to_container(OmegaConf.structured(self.cfg))
        new = flat_config(current)  # type: ignore[arg-type]
        try:
            old = flat_config(_saved_config(path))
        except (CorewardingError, ValueError) as err:
            changes: dict[str, tuple[Any, Any]] = {
                "config.yaml": (f"unreadable: {err}", "this run's settings")
            }
        else:
            keys = (old.keys() | new.keys()) - {"resume"}
            changes = {
                k: (old.get(k, _ABSENT), new.get(k, _ABSENT))
                for k in sorted(keys)
                if old.get(k, _ABSENT) != new.get(k, _ABSENT)
            }
        meaningful = {k: v for k, v in changes.items() if k not in NEUTRAL_CHANGES}
        if meaningful and self.resume_from is not None and not self.cfg.trainer.allow_config_changes:
            step = self.resume_from[0]
            listed = "; ".join(f"{k}: {old_v} → {new_v}" for k, (old_v, new_v) in meaningful.items())
            raise ConfigError(
                f"resume=true would continue {self.run_dir} with settings that change what its steps mean: "
                f"{listed}. Its steps 1-{step} ran with the values in {path}: resume with those, start a new "
                "run (another trainer.run_name), or pass trainer.allow_config_changes=true to go on with the "
                f"new values (the old config is then kept as config-step-{step}.yaml and in "
                "config_history.jsonl)"
            )
        return changes

    def _record_config_changes(self, step: int) -> None:
        """Keep what the earlier steps ran with before ``config.yaml`` is replaced: the old file as
        ``config-step-<step>.yaml`` (the first one written for that step: later resumes at the same step ran
        no step with theirs) and one record ``{step, time, changes}`` appended to ``config_history.jsonl``."""
        if not self._config_changes:
            return
        old_text = read_text(self.run_dir / "config.yaml", "YAML")
        kept = self.run_dir / f"config-step-{step}.yaml"
        if not kept.exists():
            atomic_write_text(kept, old_text)
        record = {
            "step": step,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changes": {k: [old, new] for k, (old, new) in self._config_changes.items()},
        }
        append_jsonl(self.run_dir / "config_history.jsonl", [record])

    # ------------------------------------------------------------------ setup
    def _reward_options(self) -> dict[str, Any]:
        """The ``reward.*`` keys the method accepts, and its own ``method_options``."""
        from corewarding.rewards import method_class

        accepted = method_class(self.cfg.method).option_defaults
        opts = {k: v for k, v in asdict(self.cfg.reward).items() if k in accepted}
        return {**opts, **self.cfg.method_options}

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
            self._train_files = [
                resolve_data_path(cfg.data.train),
                resolve_data_path(cfg.data.train_rephrased),
            ]
            pairs = load_pairs(*self._train_files, system_prompt=sp, limit=cfg.data.limit)
            self.items: list[Item] = [(a, b) for a, b in pairs]
        else:
            self._train_files = [resolve_data_path(cfg.data.train)]
            qs = load_questions(self._train_files[0], limit=cfg.data.limit, system_prompt=sp)
            self.items = [(q, None) for q in qs]
        self.val_questions: list[Question] = []
        if cfg.data.val:
            self.val_questions = load_questions(
                resolve_data_path(cfg.data.val), limit=cfg.data.val_limit, system_prompt=sp
            )

    def _build_models(self, engine_factory) -> None:
        """Policy (storage dtype), teacher or KL reference, their sharding, the optimizer and the engine."""
        from corewarding.models.loading import load_model_and_tokenizer
        from corewarding.rollout.factory import make_engine

        cfg, acc = self.cfg, self.accelerator
        # LoRA (model.lora.r > 0): only adapters train, so the frozen base is held in the compute dtype (no
        # fp32 master copy of it) and the adapters in the storage dtype; see corewarding.training.lora
        self.lora = cfg.model.lora.r > 0
        if self.lora:
            from corewarding.training import lora

            lora.require_peft()
            lora.require_unsharded(self.strategy)
        model, self.tokenizer = load_model_and_tokenizer(
            cfg.model.name_or_path,
            device=acc.device,
            dtype=self.compute_dtype if self.lora else self.storage_dtype,
        )
        self._filter_long_prompts()
        checkpointing = cfg.model.gradient_checkpointing or (
            self.strategy == "fsdp2" and launch_activation_checkpointing()
        )
        if checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        # teacher-forced passes run each distinct prompt once and share its KV cache with its G responses;
        # gradient checkpointing keeps no cache in training, so it runs whole sequences
        self._share_prompts = not checkpointing
        if self.lora:
            model = lora.apply_lora(model, cfg.model.lora, self.storage_dtype)
        model.train()
        # the teacher and the reference are copies of the initial policy, made before any sharding; the EMA
        # teacher accumulates a ≈ 1e-4 updates, so it stays fp32; frozen copies may run in compute dtype
        # under ZeRO-3 the policy was loaded already partitioned, so the copies are loaded the same way
        zero3 = self.strategy == "deepspeed"
        self.teacher: EMATeacher | AdapterEMATeacher | None = None
        self.ref_model = None
        # LoRA: no second model. The KL reference is the policy's own module with its adapters disabled (the
        # base = the initial policy), or run as the teacher for Co-rewarding-II (see _reference)
        self._lora_reference = self.lora and cfg.grpo.kl_coef > 0
        if self.method.needs_teacher and self.lora:
            self.teacher = AdapterEMATeacher(
                model,
                ema_enabled=cfg.teacher.ema,
                update_interval=cfg.teacher.update_interval,
                a_start=cfg.teacher.a_start,
                a_end=cfg.teacher.a_end,
            )
        elif self.method.needs_teacher:
            self.teacher = EMATeacher(
                model,
                ema_enabled=cfg.teacher.ema,
                update_interval=cfg.teacher.update_interval,
                a_start=cfg.teacher.a_start,
                a_end=cfg.teacher.a_end,
                dtype=None if zero3 else torch.float32 if cfg.teacher.ema else self.compute_dtype,
                model=self._load_copy() if zero3 else None,
            )
            if cfg.grpo.kl_coef > 0:
                self.ref_model = self.teacher.model  # the paper: the teacher is also the KL reference
        elif cfg.grpo.kl_coef > 0 and not self.lora:
            reference = self._load_copy() if zero3 else copy.deepcopy(model).to(self.compute_dtype)
            self.ref_model = reference.eval().requires_grad_(False)

        if self.strategy == "fsdp2":
            mesh = device_mesh(acc.device)
            reshard = launch_reshard_after_forward(cfg.distributed.reshard_after_forward)
            frozen = self.teacher.model if self.teacher is not None else self.ref_model
            for module in (model, frozen):
                if module is not None:
                    shard_fsdp2(module, mesh, self.compute_dtype, reshard)
        optimizer = self._optimizer(model)  # after fully_shard: it must hold the sharded parameters
        total_updates = cfg.trainer.total_steps * cfg.grpo.updates_per_step
        warmup = int(cfg.optim.warmup_ratio * total_updates)
        lr_lambda = _lr_lambda(cfg.optim.schedule, warmup, total_updates, cfg.optim.min_lr_ratio)
        self._micro_batches_plan = None
        if self.strategy == "fsdp2":
            # the sharded model and optimizer are checkpointed with torch.distributed.checkpoint; accelerate
            # keeps the scheduler and the RNG states
            self.model, self.optimizer = model, optimizer
            self.scheduler = acc.prepare_scheduler(torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda))
        elif zero3:
            from corewarding.training.zero3 import micro_batch_setup

            self._micro_batches_plan = micro_batch_setup(
                acc, self._micro_batches_per_update(), cfg.optim.micro_batch_size
            )
            self.model, self.optimizer = acc.prepare(model, optimizer)
            # ZeRO-3 regroups the parameters into flat fp32 partitions held by the torch optimizer inside its
            # own (accelerate wrapper → DeepSpeed ZeRO-3 optimizer → torch AdamW): the schedule drives those
            inner = self.optimizer.optimizer.optimizer
            self.scheduler = acc.prepare_scheduler(torch.optim.lr_scheduler.LambdaLR(inner, lr_lambda))
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
            self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.policy = acc.unwrap_model(self.model)
        if zero3:
            self._partition_frozen_models()
        if self.lora:
            # the training state holds the adapters only (the base is model.name_or_path, unchanged)
            acc.register_save_state_pre_hook(self._lora_save_hook)
            acc.register_load_state_pre_hook(self._lora_load_hook)
        if engine_factory is not None:
            self.engine = engine_factory(self.policy, self.tokenizer)
        else:
            self.engine = make_engine(
                cfg.rollout.engine,
                self.policy,
                self.tokenizer,
                batch_size=cfg.rollout.batch_size,
                max_prompt_length=cfg.data.max_prompt_length,
                gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                sleep_between_steps=cfg.rollout.sleep_between_steps,
                seed=cfg.trainer.seed + acc.process_index,  # each process samples its own stream
            )
        self._engine_holds: str | None = None  # "policy" / "teacher" once synced; None when stale
        self.pad_id = self.tokenizer.pad_token_id

    def _load_copy(self):
        """A second copy of the initial policy from its files (ZeRO-3: partitioned while loading)."""
        from corewarding.models.loading import load_model_and_tokenizer

        copy_, _ = load_model_and_tokenizer(
            self.cfg.model.name_or_path, device=self.accelerator.device, dtype=self.storage_dtype
        )
        return copy_

    def _partition_frozen_models(self) -> None:
        """ZeRO-3: the teacher (fp32 slices when it is an EMA) and the reference become frozen engines
        partitioned like the policy; the modules inside them are what the trainer calls."""
        from corewarding.training.zero3 import prepare_frozen

        self._frozen_engines = []
        if self.teacher is not None:
            engine = prepare_frozen(self.teacher.model, self.accelerator, fp32=self.cfg.teacher.ema)
            self._frozen_engines.append(engine)
            shared = self.ref_model is self.teacher.model
            self.teacher.model = engine.module
            if shared:
                self.ref_model = engine.module
        elif self.ref_model is not None:
            engine = prepare_frozen(self.ref_model, self.accelerator)
            self._frozen_engines.append(engine)
            self.ref_model = engine.module

    def _micro_batches_per_update(self) -> int:
        """Micro-batches in one optimizer update on each process (the same on every process)."""
        cfg = self.cfg
        views = 2 if self.method.needs_rephrased else 1
        rollouts = cfg.trainer.batch_questions // self.accelerator.num_processes * views * cfg.rollout.n
        per_update = math.ceil(rollouts / cfg.grpo.updates_per_step)
        return math.ceil(per_update / cfg.optim.micro_batch_size)

    def _optimizer(self, model) -> torch.optim.Optimizer:
        cfg = self.cfg
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:  # LoRA: the frozen base
                continue
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.optim.lr,
            betas=tuple(cfg.optim.betas),
        )

    def _compute(self):
        """Autocast to the compute dtype for forwards of fp32 weights (FSDP2 casts in its all-gather)."""
        if self.strategy == "fsdp2":
            return contextlib.nullcontext()
        return autocast(self.accelerator.device, self.compute_dtype, self.storage_dtype)

    def _filter_long_prompts(self) -> None:
        """Drop training items and validation questions whose prompt is longer than
        ``data.max_prompt_length``, counted in :attr:`prompt_filter` (the run's first metrics record).

        Validation is filtered like training rather than left to the engine, which would keep the end of a
        long prompt and so cut its beginning (the system prompt) away. Nothing left to train on is an error
        naming the setting, the file and the shortest prompt, since every step would otherwise fail.
        """
        from corewarding.data import filter_by_prompt_length, filter_pairs_by_prompt_length

        max_len = self.cfg.data.max_prompt_length
        items = self.items
        if self.uses_pairs:
            pairs, dropped = filter_pairs_by_prompt_length(
                [(a, b) for a, b in items], self.tokenizer, max_len
            )
            self.items = [(a, b) for a, b in pairs]
        else:
            kept, dropped = filter_by_prompt_length([a for a, _ in items], self.tokenizer, max_len)
            self.items = [(q, None) for q in kept]
        if items and not self.items:
            self._no_prompt_fits(items, max_len)
        val_total = len(self.val_questions)
        self.val_questions, val_dropped = filter_by_prompt_length(self.val_questions, self.tokenizer, max_len)
        self.prompt_filter = {
            "data/train_dropped_long_prompts": dropped,
            "data/val_dropped_long_prompts": val_dropped,
        }
        if (dropped or val_dropped) and self.accelerator.is_main_process:
            unit = "pairs" if self.uses_pairs else "questions"
            line = f"data.max_prompt_length={max_len}: dropped {dropped} of {len(items)} training {unit}"
            if val_total:
                line += f" and {val_dropped} of {val_total} validation questions"
                if not self.val_questions:
                    line += " (no validation is left)"
            _notice(line + " whose prompts are longer")

    def _no_prompt_fits(self, items: list[Item], max_len: int) -> None:
        from corewarding.data.prompting import prompt_lengths

        views = [[q for q in item if q is not None] for item in items]
        lengths = prompt_lengths(self.tokenizer, [q.messages for view in views for q in view])
        # an item fits when all its prompts do: its length is its longest prompt's
        longest, at = [], 0
        for view in views:
            longest.append(max(lengths[at : at + len(view)]))
            at += len(view)
        shortest = min(longest)
        files = " and ".join(str(f) for f in self._train_files)
        which = "pair's longer prompt" if len(self._train_files) > 1 else "prompt"
        raise DataError(
            f"data.max_prompt_length={max_len} is shorter than every training prompt in {files} (the "
            f"shortest {which} has {shortest} tokens), so there is nothing to train on; raise "
            f"data.max_prompt_length to at least {shortest}"
        )

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

    @contextlib.contextmanager
    def _engine_on(self, role: str) -> Iterator[RolloutEngine]:
        """The rollout engine holding the ``policy``'s or the ``teacher``'s current weights, for one block.

        The engine is synced whenever it does not hold ``role``'s current weights (after every optimizer
        step, after an EMA update, after a resume): for the transformers engine that points it at the
        module, for vLLM it loads the weights. Sharded weights are gathered only for the block, and
        sampling runs in the compute dtype.
        """
        module = self.policy if role == "policy" else self.teacher.model  # type: ignore[union-attr]
        # the transformers engine samples with the module itself, so a sharded one is gathered for the
        # block; vLLM holds its own copy and gathers FSDP2 shards one tensor at a time as it syncs (ZeRO-3
        # partitions can only be gathered through DeepSpeed, for the block)
        gathered = self.cfg.rollout.engine == "hf" or self.strategy == "deepspeed"
        gather = full_parameters(module) if gathered else contextlib.nullcontext()
        # a LoRA teacher is the policy's module with the teacher's adapter (or none) active for the block,
        # also while an engine that keeps its own copy (vLLM) syncs from it; a separate teacher copy: a no-op
        teacher = self.teacher.active() if role == "teacher" else contextlib.nullcontext()  # type: ignore[union-attr]
        with gather, teacher, self._compute():
            if self._engine_holds != role:
                self.engine.sync_weights(module)
                self._engine_holds = role
            yield self.engine

    def _sample(
        self, role: str, prompts: list[list[dict[str, str]]], n: int, sampling: SamplingParams
    ) -> list[Rollout]:
        with self._engine_on(role) as engine:
            return engine.generate(prompts, n, sampling)

    def _weights_changed(self) -> None:
        """Called after every optimizer step (and EMA update): the engine's copy is stale."""
        self._engine_holds = None

    def _rollout_groups(self, step: int, items: list[Item]) -> list[RolloutGroup]:
        cfg = self.cfg
        G = cfg.rollout.n
        views = [(self._pair_id(it), view, q) for it in items for view, q in self._views_for(it)]
        rollouts = self._sample(
            "policy",
            [q.messages for _, _, q in views],
            G,
            self._sampling(step, cfg.rollout.temperature, cfg.rollout.max_new_tokens, salt=1),
        )
        groups = [
            RolloutGroup(question=q, view=view, pair_id=pid, rollouts=rollouts[i * G : (i + 1) * G])
            for i, (pid, view, q) in enumerate(views)
        ]
        if self.teacher is not None:
            Gt = cfg.teacher.n
            tq = [it[1] if cfg.teacher.view == "rephrased" else it[0] for it in items]
            t_rollouts = self._sample(
                "teacher",
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
            with self._compute():
                fo = response_forward(
                    model, batch, temperature=temp, with_stats=with_stats, share_prompts=self._share_prompts
                )
            for row, i in enumerate(mb):
                n = int(batch.response_mask[row].sum().item())
                out[i]["logprobs"] = fo.logprobs[row, :n].float().cpu()
                if with_stats:
                    m = batch.response_mask[row]
                    denom = m.sum().clamp(min=1)
                    out[i]["entropy"] = float((fo.entropy[row] * m).sum() / denom)
                    out[i]["self_certainty"] = float((fo.self_certainty[row] * m).sum() / denom)
        return out

    # ------------------------------------------------------------------ update (corewarding.training.update)
    def _update(
        self, rollouts: list[Rollout], advantages: list[float], old: list[dict] | None, *, step: int
    ) -> dict[str, float]:
        """The step's optimizer update(s): :func:`~corewarding.training.update.update_policy`."""
        return update.update_policy(self, rollouts, advantages, old, step=step)

    def _micro_batch_loss(
        self,
        mb: list[int],
        rollouts: list[Rollout],
        advantages: list[float],
        old: list[dict] | None,
        norm: dict[str, float],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch's GRPO loss and stats: :func:`~corewarding.training.update.micro_batch_loss`."""
        return update.micro_batch_loss(self, mb, rollouts, advantages, old, norm)

    def _clip_gradients(self) -> float | None:
        """The norm before clipping: :func:`~corewarding.training.update.clip_gradients`."""
        return update.clip_gradients(self)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        """The KL reference for one no-grad block (None without KL). LoRA: the policy's own module, in eval
        mode (no adapter dropout), run as the teacher (Co-rewarding-II: its adapter, or none when frozen) or
        with its adapters disabled (the base, which is the initial policy: adapters start with B = 0)."""
        if not self._lora_reference:
            yield self.ref_model
            return
        from corewarding.training import lora

        with lora.eval_mode(self.policy):
            if self.teacher is not None:
                with self.teacher.active() as module:
                    yield module
            else:
                with lora.adapter_active(self.policy, None):
                    yield self.policy

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
        with self._engine_on("policy") as engine:  # the current policy, whatever the engine
            completions = generate_completions(
                engine, shard, cfg.validation.n, sampling, progress=False, desc="validation"
            )
        completions = gather_object(completions) if acc.num_processes > 1 else completions
        # read and vote as the reward does (a paper-mode run, extraction=boxed, validates on the last box only)
        result = score_completions(
            self.val_questions,
            completions,
            k=cfg.validation.n,
            exact_vote=cfg.reward.exact_vote,
            extraction=cfg.reward.extraction,
        )
        return {f"val/{k}": v for k, v in result.metrics.items()}

    # ------------------------------------------------------------------ loop
    def _resume(self) -> int:
        """Load the newest intact checkpoint's training state (weights, optimizer, scheduler, RNG, teacher);
        its step (0 without one).

        A checkpoint whose files pass the manifest check can still fail to load (bytes damaged in place):
        then the next older one is tried, all processes moving on together, and the failure is said in one
        line. Each load replaces the whole state, so a failed partial load leaves nothing behind.
        """
        acc = self.accelerator
        for i, (step, path) in enumerate(self._candidates):
            failure = None
            try:
                self.load_state(path / ckpt.STATE)
            except Exception as err:  # safetensors, torch.load, accelerate: a damaged file, whatever it says
                failure = _one_line(err)
            failed = torch.tensor([float(failure is not None)], device=acc.device)
            if acc.num_processes > 1:
                failed = acc.reduce(failed, reduction="sum")
            if not bool(failed.item()):
                self.resume_from = (step, path)
                self._weights_changed()  # the engine still holds the initial weights
                return step
            reason = failure or "it failed to load on another process"
            older = self._candidates[i + 1 :]
            if not older:
                raise CheckpointError(
                    f"resume=true, but {path} failed to load ({reason}) and no older checkpoint of "
                    f"{self.run_dir} is intact. Restore the files, or start a new run (another trainer.run_name)"
                )
            if acc.is_main_process:
                _notice(f"{path.name} failed to load ({reason}): trying {older[0][1].name}")
        return 0

    def _prepare_run_dir(self, start: int) -> None:
        """Make the run folder say what the run about to start from step ``start`` will do (main process).

        The metrics records and rollout samples that it writes again are dropped (everything when it starts
        from step 0: the validation before training is redone too), so the files read as one uninterrupted
        run; the old config is kept when this one changes it; then ``config.yaml`` is (re)written.
        """
        if self.cfg.resume:
            truncate_metrics(self.run_dir / "metrics.jsonl", start)
        samples = self.run_dir / "rollouts"
        samples.mkdir(parents=True, exist_ok=True)
        for path in samples.iterdir():
            match = _SAMPLES.match(path.name)
            if match and int(match.group(1)) > start:
                path.unlink()
        self._record_config_changes(start)
        save_config(self.cfg, self.run_dir / "config.yaml")

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
        atomic_write_jsonl(self.run_dir / "rollouts" / f"step-{step:06d}{suffix}.jsonl", rows)

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
        start = self._resume()
        if acc.is_main_process:
            self._prepare_run_dir(start)
        acc.wait_for_everyone()
        # the prompt filter's counts go into the first record of a run that starts at step 0 (the same
        # record whether or not the run is later killed and resumed)
        first_record = dict(self.prompt_filter) if start == 0 else {}
        logger = (
            RunLogger(
                self.run_dir,
                acc,
                self.trackers,
                OmegaConf.to_container(OmegaConf.structured(cfg)),
                self.run_dir.name,
                cfg.trainer.wandb_project,
                resume=start > 0,
            )
            if acc.is_main_process
            else None
        )
        sampler = StepSampler(self.items, cfg.trainer.batch_questions, cfg.trainer.seed, cfg.data.shuffle)
        total = cfg.trainer.total_steps
        last_val: dict[str, float] | None = None
        self.last_validation: tuple[int, dict[str, float]] | None = None  # (step, figures): model cards
        if start == 0 and cfg.validation.before_training and self.val_questions:
            _seed_all(cfg.trainer.seed)
            last_val = self.validate()
            self.last_validation = (0, last_val)
            if logger:
                logger.log(0, {**last_val, **first_record})
            first_record = {}
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"train {cfg.method}",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        metrics: dict[str, Any] = {}
        try:
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
                advantages = update.step_advantages(scores.rewards, cfg.grpo.adv_eps)
                t_score = time.perf_counter() - t1
                t2 = time.perf_counter()
                release = getattr(self.engine, "release_memory", None)
                if release is not None:
                    release()  # vLLM: give its weights and KV cache back to the update
                upd = self._update(rollouts, advantages, old, step=step)
                t_update = time.perf_counter() - t2
                if self.teacher is not None and self.teacher.update(self.policy, step + 1, total):
                    self._weights_changed()
                teacher_sets = {
                    id(g.teacher_rollouts): g.teacher_rollouts for g in groups if g.teacher_rollouts
                }
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
                if done == total and self.strategy == "ddp":
                    metrics["dist/param_spread"] = self._param_spread()
                if cfg.trainer.val_every and self.val_questions and done % cfg.trainer.val_every == 0:
                    last_val = self.validate()
                    self.last_validation = (done, last_val)
                    metrics.update(last_val)
                self._write_samples(done, groups, scores)
                if logger:
                    logger.log(done, {**metrics, **first_record})
                first_record = {}
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
        finally:  # a diverged run too: the bar is closed and the trackers finished
            bar.close()
            if logger:
                logger.close()
        if logger:
            from corewarding.reporting.plots import plot_run

            plot_run(self.run_dir)
        acc.wait_for_everyone()
        if cfg.trainer.push_to_hub and acc.is_main_process:
            from corewarding.reporting.push import push_final_checkpoint

            push_final_checkpoint(self.run_dir, cfg)
        return TrainResult(self.run_dir, total, metrics, last_val)

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> None:
        """Checkpoint ``step`` (a collective: every process calls it). See :mod:`..checkpoint` for the layout.

        The training state goes through ``accelerator.save_state`` (and, under FSDP2, torch's distributed
        checkpoint for the shards); the Hugging Face export is gathered and written in bf16 by the main
        process. The staging folder is renamed into place only once everything is written.
        """
        acc = self.accelerator
        staging = ckpt.staging_dir(self.run_dir, step)
        if acc.is_main_process and staging.exists():
            shutil.rmtree(staging)  # left by a run killed while saving
        acc.wait_for_everyone()
        state_dir = staging / ckpt.STATE
        with _quiet("accelerate.utils.other"):  # "Removed shared tensor" for every tied model: expected
            acc.save_state(str(state_dir))
        if self.strategy == "fsdp2":
            self._save_sharded(state_dir)
        teacher_full = self._teacher_state() if self.teacher is not None else None
        policy_full = None
        if self.strategy == "fsdp2":
            policy_full = full_state_dict(self.model)
        elif self.strategy == "deepspeed":
            policy_full = acc.get_state_dict(self.model)  # ZeRO-3's 16-bit gather
        if acc.is_main_process:
            if teacher_full is not None and self.strategy != "fsdp2":
                ckpt.save_tensors(teacher_full, state_dir / ckpt.TEACHER_FILE)
            sampler_pos = StepSampler(
                self.items, self.cfg.trainer.batch_questions, self.cfg.trainer.seed, self.cfg.data.shuffle
            ).position(step)
            extra = {"data_position": sampler_pos, "method": self.cfg.method, "strategy": self.strategy}
            ckpt.write_state_json(state_dir, step, extra)
            export = resolve_dtype(self.cfg.trainer.export_dtype, "cpu")
            if self.lora:
                self._export_lora(staging, export)
            else:
                ckpt.export_pretrained(self.policy, staging, policy_full, self.tokenizer, export)
            if self.teacher is not None and not self.lora:
                ckpt.export_pretrained(self.teacher.model, staging / "teacher", teacher_full, dtype=export)
            from corewarding.reporting.model_card import write_model_card

            validation = getattr(self, "last_validation", None)
            write_model_card(
                staging, self.cfg, step, validation=validation, messages=self.items[0][0].messages
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            ckpt.publish(self.run_dir, step, self.cfg.trainer.keep_checkpoints)
        acc.wait_for_everyone()

    def _export_lora(self, staging: Path, dtype: torch.dtype) -> None:
        """LoRA checkpoints: the policy's adapter in peft's format under ``adapter/`` and, with
        ``model.lora.merge_on_export``, the merged model (base + adapter) as the Hugging Face export at the
        top; the EMA teacher the same way under ``teacher/`` (a frozen LoRA teacher is the base itself)."""
        from corewarding.training import lora

        merge = self.cfg.model.lora.merge_on_export
        base = self.policy.get_base_model()
        lora.save_adapter(self.policy, lora.POLICY, staging / lora.ADAPTER_DIR)
        if merge:
            merged = lora.merged_state_dict(self.policy, lora.POLICY, dtype)
            ckpt.export_pretrained(base, staging, merged, self.tokenizer, dtype)
        else:
            self.tokenizer.save_pretrained(staging)
        if isinstance(self.teacher, AdapterEMATeacher) and self.teacher.adapter is not None:
            (staging / "teacher").mkdir(parents=True, exist_ok=True)
            lora.save_adapter(self.policy, self.teacher.adapter, staging / "teacher" / lora.ADAPTER_DIR)
            if merge:
                merged = lora.merged_state_dict(self.policy, self.teacher.adapter, dtype)
                ckpt.export_pretrained(base, staging / "teacher", merged, dtype=dtype)

    def _lora_save_hook(self, models, weights, output_dir) -> None:
        """accelerate's save_state writes the adapters only: the frozen base is model.name_or_path."""
        from corewarding.training import lora

        weights[:] = [{k: v.to("cpu", copy=True) for k, v in lora.trainable_state(self.policy).items()}]

    def _lora_load_hook(self, models, input_dir) -> None:
        """accelerate's load_state skips the model; :meth:`load_state` loads the adapters by name."""
        models.clear()

    def _teacher_state(self) -> dict[str, torch.Tensor]:
        """The teacher's full-precision state dict (gathered on the main process when sharded)."""
        assert self.teacher is not None
        if isinstance(self.teacher, AdapterEMATeacher):  # its adapter's tensors only (none when frozen)
            return {k: v.to("cpu", copy=True) for k, v in self.teacher.adapter_state().items()}
        model = self.teacher.model
        if self.strategy == "fsdp2":
            state = full_state_dict(model)
        else:
            with full_parameters(model):  # ZeRO-3: gathered for the copy; else a no-op
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return ckpt.without_tied(model, state)

    def _sharded_state(self) -> dict[str, Any]:
        """What torch.distributed.checkpoint saves and loads under FSDP2: this process's shards."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state: dict[str, Any] = {"model": model_sd, "optimizer": optim_sd}
        if self.teacher is not None:
            state["teacher"] = get_model_state_dict(self.teacher.model)
        return state

    def _save_sharded(self, state_dir: Path) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(self._sharded_state(), checkpoint_id=str(state_dir / ckpt.SHARDED))

    def load_state(self, state_dir: Path) -> None:
        """Restore weights, optimizer, scheduler, RNG and teacher from ``state_dir`` (a collective)."""
        acc = self.accelerator
        acc.load_state(str(state_dir))
        if self.lora:
            from corewarding.training import lora

            source = state_dir / "model.safetensors"
            names = list(lora.trainable_state(self.policy))
            lora.load_named(self.policy, ckpt.load_tensors(source), names, str(source))
            if isinstance(self.teacher, AdapterEMATeacher):
                source = state_dir / ckpt.TEACHER_FILE
                self.teacher.load_adapter_state(ckpt.load_tensors(source), str(source))
            return
        if self.strategy == "fsdp2":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

            state = self._sharded_state()
            dcp.load(state, checkpoint_id=str(state_dir / ckpt.SHARDED))
            set_state_dict(
                self.model,
                self.optimizer,
                model_state_dict=state["model"],
                optim_state_dict=state["optimizer"],
            )
            if self.teacher is not None:
                set_model_state_dict(self.teacher.model, state["teacher"])
        elif self.teacher is not None:
            teacher = ckpt.load_tensors(state_dir / ckpt.TEACHER_FILE)
            with full_parameters(self.teacher.model, modifier_rank=0):  # ZeRO-3: re-partitioned on exit
                ckpt.load_matching(self.teacher.model, teacher, str(state_dir / ckpt.TEACHER_FILE))


def train(cfg: Config, progress: bool = True) -> TrainResult:
    """Build a :class:`Trainer` for ``cfg`` and run it."""
    return Trainer(cfg, progress=progress).train()
