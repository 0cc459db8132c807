"""Side-by-side CPU step time: corewarding's ``Trainer`` against TRL's ``GRPOTrainer``, same work per step.

Both run in this one process, one after the other, on the micro-world: the same base model directory, the
same training questions in the same order (TRL's dataset is laid out in corewarding's own step order and
not shuffled again), the same chat template and system prompt, G rollouts for each of Q questions a step,
at most M new tokens at temperature 1.0, majority-vote rewards on the last ``\\boxed{}`` (TRL's reward
function calls corewarding's own extraction, voting and matching helpers, so both sides vote the same
way), a k3 KL to a frozen reference, the same AdamW and learning rate, one optimizer update per step over
one micro-batch holding the whole step, fp32 on CPU.

Step time: corewarding's ``time/generation + time/scoring + time/update`` from the run's ``metrics.jsonl``;
TRL's wall time from ``on_step_begin`` to ``on_step_end`` (a ``TrainerCallback``), which holds generation,
reward, reference forward, policy forward/backward, clipping and the optimizer step. Neither includes the
per-step logging. The median is over the steps after the first two (all steps when there are fewer than
three). See ``benchmarks/README.md`` for what TRL's step does and what could not be equalised.

    .venv/bin/python benchmarks/trl_step_time.py [--steps N] [--json PATH] [--out DIR]
"""

from __future__ import annotations

import os

# A CPU benchmark: neither trainer may pick up a GPU. Nothing is fetched from the Hub.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WARMUP_STEPS = 2  # steps left out of the median (first-call costs: allocator, worker pool, lazy imports)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from corewarding.microworld.experiment import Budget

    b = Budget()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8, help="training steps on each side (default 8)")
    p.add_argument("--questions", type=int, default=b.questions_per_step, help="questions per step (Q)")
    p.add_argument("--group-size", type=int, default=b.group_size, help="rollouts per question (G)")
    p.add_argument("--max-new-tokens", type=int, default=b.max_new_tokens)
    p.add_argument("--lr", type=float, default=b.lr)
    p.add_argument("--kl-coef", type=float, default=b.kl_coef, help="k3 KL coefficient (TRL's beta)")
    p.add_argument("--seed", type=int, default=b.seed)
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads for both runs (default: torch's)"
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="a Hugging Face model directory with the micro-world tokenizer (default: the micro-world's "
        "pretrained base model, from get_base_model)",
    )
    p.add_argument("--cache-dir", default=None, help="where micro-world base models are cached")
    p.add_argument("--out", default=None, help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="write the results table to this JSON file")
    p.add_argument(
        "--trl-first",
        action="store_true",
        help="run TRL first (default: corewarding first), to check order effects",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("steps", "questions", "group_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.group_size < 2:
        p.error("--group-size must be at least 2 (GRPO normalises within a group)")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be a positive integer")
    return args


# ------------------------------------------------------------------------------------------- set-up


def make_setup(args: argparse.Namespace, out: Path):
    """The micro-world's parquet files under ``out/world/data`` and the base model directory."""
    from corewarding.microworld.experiment import Setup, prepare
    from corewarding.microworld.world import WorldConfig, build_world

    progress = not args.no_progress
    cache = Path(args.cache_dir) if args.cache_dir else None
    if args.base_model is None:
        return prepare(out / "world", cache_dir=cache, progress=progress)
    world_config = WorldConfig()
    data_dir = out / "world" / "data"
    build_world(config=world_config).write(data_dir)
    return Setup(world_config, data_dir, Path(args.base_model).resolve())


def corewarding_config(args: argparse.Namespace, setup, out_dir: Path):
    """The ordinary micro-world training config (``train_config``) for majority voting on the original view,
    with validation and checkpoints off and one micro-batch / one generate call covering the whole step."""
    from corewarding.config import RewardConfig
    from corewarding.microworld.experiment import Budget, train_config

    budget = Budget(
        steps=args.steps,
        lr=args.lr,
        kl_coef=args.kl_coef,
        group_size=args.group_size,
        questions_per_step=args.questions,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        val_every=0,
        seed=args.seed,
    )
    per_step = args.questions * args.group_size
    extra = [
        "data.view=original",
        "model.compute_dtype=float32",
        "validation.before_training=false",
        "trainer.save_every=0",
        f"optim.micro_batch_size={per_step}",
        f"rollout.batch_size={per_step}",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        "trainer.loggers=[jsonl]",
    ]
    if "extraction" in {f.name for f in dataclasses.fields(RewardConfig)}:
        extra.append("reward.extraction=boxed")  # the last \boxed{} only (older trees: the last box first)
    return train_config(setup, "majority_vote", budget, out_dir, "corewarding", extra=extra)


def step_questions(cfg, tokenizer) -> list[list]:
    """The questions of each step exactly as corewarding's trainer draws them (same filter, same sampler)."""
    from corewarding.data import filter_by_prompt_length, load_questions
    from corewarding.data.paths import resolve_data_path
    from corewarding.training.sampler import StepSampler

    questions = load_questions(resolve_data_path(cfg.data.train), system_prompt=cfg.data.system_prompt)
    kept, _ = filter_by_prompt_length(questions, tokenizer, cfg.data.max_prompt_length)
    sampler = StepSampler(kept, cfg.trainer.batch_questions, cfg.trainer.seed, cfg.data.shuffle)
    return [sampler.batch(step) for step in range(cfg.trainer.total_steps)]


def _reset_accelerate() -> None:
    """Forget the first trainer's accelerate state so the second builds its own from scratch."""
    try:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    except (ImportError, AttributeError):  # pragma: no cover - older accelerate: nothing to reset
        pass


# -------------------------------------------------------------------------------------- corewarding


def run_corewarding(cfg, progress: bool) -> dict[str, Any]:
    import torch

    from corewarding.training.run_log import read_metrics
    from corewarding.training.trainer import Trainer

    started = time.perf_counter()
    trainer = Trainer(cfg, progress=progress)
    trainer.train()
    total = time.perf_counter() - started
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "time/generation" in r]
    rows.sort(key=lambda r: r["step"])
    if len(rows) != cfg.trainer.total_steps:
        raise RuntimeError(f"corewarding logged {len(rows)} steps, expected {cfg.trainer.total_steps}")
    gen = [r["time/generation"] for r in rows]
    score = [r["time/scoring"] for r in rows]
    update = [r["time/update"] for r in rows]
    # the question of every step's first group, from the rollouts the trainer writes (sample_rollouts > 0)
    first_ids = []
    for step in range(1, cfg.trainer.total_steps + 1):
        path = cfg.run_dir / "rollouts" / f"step-{step:06d}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        first_ids.append(json.loads(lines[0])["question_id"] if lines else None)
    return {
        "step_seconds": [g + s + u for g, s, u in zip(gen, score, update, strict=True)],
        "generation_seconds": gen,
        "scoring_seconds": score,
        "update_seconds": update,
        "completion_length": [r["response_length/mean"] for r in rows],
        "reward_mean": [r["reward/mean"] for r in rows],
        "kl": [r.get("kl") for r in rows],
        "first_question_ids": first_ids,
        "torch_threads": torch.get_num_threads(),
        "total_seconds": total,
    }


# ---------------------------------------------------------------------------------------------- TRL


def reward_options(cfg) -> dict[str, Any]:
    """The options corewarding's trainer gives its reward method: the ``reward.*`` settings it accepts."""
    from corewarding.rewards import REGISTRY

    accepted = getattr(REGISTRY[cfg.method], "option_defaults", {})
    return {k: v for k, v in dataclasses.asdict(cfg.reward).items() if k in accepted}


def majority_vote_reward(cfg, record: list[float]):
    """TRL reward function: 1 for completions whose answer equals their group's majority answer.

    Completions of one prompt arrive as consecutive blocks of G (TRL's ``RepeatSampler``); the block
    structure is checked against the question ids. Extraction (``safe_extract``), voting (``elect_labels``)
    and matching (``reward_agreement``) are the very helpers corewarding's ``majority_vote`` method calls
    (over ``corewarding.answers``), with the options that method gets from ``cfg``.
    """
    from corewarding.rewards import get_reward_method
    from corewarding.rewards.matching import safe_extract
    from corewarding.rewards.voting import elect_labels, reward_agreement

    group_size = cfg.rollout.n
    method = get_reward_method(cfg.method, **reward_options(cfg))
    exact = bool(getattr(method, "exact_vote", False))
    extraction = getattr(method, "extraction", None)

    def extract(text: str) -> str | None:
        return safe_extract(text) if extraction is None else safe_extract(text, extraction)

    def reward(completions, question_id, completion_ids, **_: Any) -> list[float]:
        n = len(completions)
        if n % group_size:
            raise RuntimeError(f"{n} completions is not a whole number of groups of {group_size}")
        for start in range(0, n, group_size):
            if len(set(question_id[start : start + group_size])) != 1:
                raise RuntimeError("a block of completions mixes prompts: the group layout is not as assumed")
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        answers = [extract(t) for t in texts]
        groups = [answers[i : i + group_size] for i in range(0, n, group_size)]
        labels, _ = elect_labels(groups, exact=exact)
        rewards, _, _ = reward_agreement(groups, labels, exact=exact)
        record.append(sum(len(ids) for ids in completion_ids) / max(1, n))
        return [r for row in rewards for r in row]

    reward.__name__ = "majority_vote"
    return reward


def run_trl(cfg, batches: list[list], progress: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from corewarding.data.prompting import prompt_token_ids

    Q, G = cfg.trainer.batch_questions, cfg.rollout.n
    per_step = Q * G
    rows = [{"prompt": q.messages, "question_id": q.id} for batch in batches for q in batch]
    dataset = Dataset.from_list(rows)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.threads: set[int] = set()
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.threads.add(torch.get_num_threads())
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._t0)

    class PhaseTimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer unchanged, with its generation and reward calls timed for the breakdown."""

        phases: dict[str, list[float]]

        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            self.phases["generation"].append(time.perf_counter() - t0)
            return out

        def _calculate_rewards(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            self.phases["scoring"].append(time.perf_counter() - t0)
            return out

        def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
            # which teacher-forced passes a step makes: the loss's policy pass (with gradient), the reference
            # pass, and no separate "old log-probs" pass when num_iterations = 1
            if model is self.ref_model:
                kind = "reference"
            else:
                kind = "policy_with_grad" if torch.is_grad_enabled() else "policy_no_grad"
            self.forward_passes[kind] = self.forward_passes.get(kind, 0) + 1
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    # transformers 5 renamed gradient_checkpointing (which TRL defaults to True) to activation_checkpointing
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    )
    o = cfg.optim
    args = GRPOConfig(
        output_dir=str(Path(cfg.trainer.output_dir) / "trl"),
        max_steps=cfg.trainer.total_steps,
        seed=cfg.trainer.seed,
        data_seed=cfg.trainer.seed,
        shuffle_dataset=False,  # the dataset is already in corewarding's step order
        # one step: Q prompts × G completions, generated once, one micro-batch, one optimizer update
        per_device_train_batch_size=per_step,
        num_generations=G,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        # sampling
        max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
        min_p=None,
        repetition_penalty=1.0,
        use_vllm=False,
        # loss: clipped surrogate + beta * k3 KL, token-mean over the step ("dapo": summed over the tokens of
        # the whole accumulated batch, divided by their number), std-scaled group advantages
        beta=cfg.grpo.kl_coef,
        epsilon=cfg.grpo.clip_ratio,
        loss_type="dapo",
        scale_rewards="group",
        importance_sampling_level="token",
        mask_truncated_completions=False,
        # optimizer: torch AdamW (not the fused variant), constant lr, no warmup, same clipping
        learning_rate=o.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=o.weight_decay,
        adam_beta1=o.betas[0],
        adam_beta2=o.betas[1],
        max_grad_norm=o.grad_clip,
        optim="adamw_torch",
        # precision and device: fp32 on CPU, no activation checkpointing (corewarding uses none)
        use_cpu=True,
        bf16=False,
        fp16=False,
        **{checkpointing: False},
        model_init_kwargs={"dtype": "float32"},
        # no evaluation, no checkpoints, no external logging
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        log_completions=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    timer = StepTimer()
    recorded_lengths: list[float] = []
    started = time.perf_counter()
    trainer = PhaseTimedGRPOTrainer(
        model=str(cfg.model.name_or_path),
        reward_funcs=majority_vote_reward(cfg, recorded_lengths),
        args=args,
        train_dataset=dataset,
        callbacks=[timer],
    )
    trainer.phases = {"generation": [], "scoring": []}
    trainer.forward_passes = {}
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints every step's log dict when tqdm is off
    if trainer.ref_model is None and cfg.grpo.kl_coef > 0:
        raise RuntimeError("TRL built no reference model although beta > 0")
    if any(getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules()):
        raise RuntimeError("TRL's policy has activation checkpointing on; corewarding's has none")
    if trainer.use_vllm or args.use_transformers_continuous_batching:
        raise RuntimeError("TRL would not sample with transformers' generate")
    # the prompts TRL feeds generate must be the ones corewarding renders
    tokenizer = trainer.processing_class
    sample = [r["prompt"] for r in rows[:per_step]]
    trl_ids = tokenizer.apply_chat_template(
        conversation=sample, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    if [list(x) for x in trl_ids] != prompt_token_ids(tokenizer, sample):
        raise RuntimeError("TRL and corewarding render the prompts differently")
    trainer.train()
    total = time.perf_counter() - started

    steps = len(timer.seconds)
    if steps != cfg.trainer.total_steps or len(recorded_lengths) != steps:
        raise RuntimeError(
            f"TRL ran {steps} steps ({len(recorded_lengths)} scored), expected {cfg.trainer.total_steps}"
        )
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    gen, score = trainer.phases["generation"], trainer.phases["scoring"]
    return {
        "step_seconds": timer.seconds,
        "generation_seconds": gen,
        "scoring_seconds": score,
        "update_seconds": [t - g - s for t, g, s in zip(timer.seconds, gen, score, strict=True)],
        "completion_length": recorded_lengths,
        "completion_length_logged": [h["completions/mean_length"] for h in logs],
        "reward_mean": [h.get("reward") for h in logs],
        "kl": [h.get("kl") for h in logs],
        "forward_passes_per_step": {k: v / steps for k, v in sorted(trainer.forward_passes.items())},
        "first_question_ids": [batch[0].id for batch in batches],
        "torch_threads": sorted(timer.threads)[0] if len(timer.threads) == 1 else sorted(timer.threads),
        "total_seconds": total,
    }


# -------------------------------------------------------------------------------------------- report


def _median_after_warmup(values: list[float]) -> float:
    kept = values[WARMUP_STEPS:] if len(values) > WARMUP_STEPS else values
    return float(statistics.median(kept))


def summarize(side: dict[str, Any]) -> dict[str, Any]:
    lengths = side["completion_length"]
    return {
        **side,
        "median_step_seconds": _median_after_warmup(side["step_seconds"]),
        "median_generation_seconds": _median_after_warmup(side["generation_seconds"]),
        "median_scoring_seconds": _median_after_warmup(side["scoring_seconds"]),
        "median_update_seconds": _median_after_warmup(side["update_seconds"]),
        "mean_completion_length": float(sum(lengths) / len(lengths)),
    }


def format_table(result: dict[str, Any]) -> str:
    cw, trl = result["corewarding"], result["trl"]
    s = result["settings"]
    steps = s["steps"]
    which = f"steps {WARMUP_STEPS + 1}-{steps}" if steps > WARMUP_STEPS else f"steps 1-{steps}"
    rows = [
        (f"median s/step ({which})", "median_step_seconds", "{:.3f}"),
        ("  generation", "median_generation_seconds", "{:.3f}"),
        ("  scoring", "median_scoring_seconds", "{:.3f}"),
        ("  update (incl. ref forward)", "median_update_seconds", "{:.3f}"),
        ("mean completion length (tokens)", "mean_completion_length", "{:.1f}"),
        ("whole run incl. set-up (s)", "total_seconds", "{:.1f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{s['questions']} questions x {s['group_size']} rollouts/step, <= {s['max_new_tokens']} new tokens, "
        f"{steps} steps, torch threads {s['torch_threads']}, {result['device']}",
        f"{'':<{width}}  {'corewarding':>12}  {'TRL ' + result['versions']['trl']:>12}",
    ]
    for label, key, fmt in rows:
        lines.append(f"{label:<{width}}  {fmt.format(cw[key]):>12}  {fmt.format(trl[key]):>12}")
    lines.append(f"{'ratio corewarding/TRL (s/step)':<{width}}  {result['ratio_step_seconds']:>12.3f}")
    passes = ", ".join(f"{k} {v:g}" for k, v in trl["forward_passes_per_step"].items())
    lines.append(f"TRL teacher-forced passes per step: {passes}")
    if not result["same_questions"]:
        lines.append("WARNING: the two runs did not see the same questions at every step")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import platform

    import torch
    import transformers
    import trl

    import corewarding

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    progress = not args.no_progress

    with tempfile.TemporaryDirectory(prefix="trl-step-time-") as tmp:
        out = Path(args.out).resolve() if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.out:
            for side in ("corewarding", "trl"):
                if (out / side).exists():
                    sys.exit(f"{out / side} exists already; choose another --out or remove it")
        setup = make_setup(args, out)
        cfg = corewarding_config(args, setup, out)
        from corewarding.models.loading import load_tokenizer

        batches = step_questions(cfg, load_tokenizer(str(cfg.model.name_or_path)))

        runs = {
            "corewarding": lambda: run_corewarding(cfg, progress),
            "trl": lambda: run_trl(cfg, batches, progress),
        }
        order = ["trl", "corewarding"] if args.trl_first else ["corewarding", "trl"]
        measured: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(order):
            if i:
                _reset_accelerate()
            torch.set_num_threads(threads)
            torch.manual_seed(args.seed)
            measured[name] = summarize(runs[name]())
        cw, tr = measured["corewarding"], measured["trl"]

    result: dict[str, Any] = {
        "settings": {
            "steps": args.steps,
            "questions": args.questions,
            "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens,
            "temperature": cfg.rollout.temperature,
            "lr": args.lr,
            "kl_coef": args.kl_coef,
            "seed": args.seed,
            "torch_threads": threads,
            "warmup_steps_excluded": WARMUP_STEPS if args.steps > WARMUP_STEPS else 0,
            "base_model": str(cfg.model.name_or_path),
            "trl_loss_type": "dapo",
            "reward_options": reward_options(cfg),
            "order": order,
        },
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "versions": {
            "corewarding": getattr(corewarding, "__version__", "?"),
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "corewarding": cw,
        "trl": tr,
        "ratio_step_seconds": cw["median_step_seconds"] / tr["median_step_seconds"],
        "same_questions": cw["first_question_ids"] == tr["first_question_ids"],
    }
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
