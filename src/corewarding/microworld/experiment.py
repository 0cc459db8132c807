"""Micro-world experiments: the world on disk, its base model, a training config, and evaluation.

``demo`` and ``compare`` are thin layers over this. Training goes through the ordinary trainer with an
ordinary config (data read back from parquet by the ordinary loaders, the base model loaded from a normal
Hugging Face directory), so what the micro-world shows is what the real code does.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corewarding.arguments import NONNEGATIVE_FLOAT, NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, SEED
from corewarding.config import FIELD_DOMAINS, Config, load_config
from corewarding.files import require_output_dir
from corewarding.microworld.world import FILE_NAMES, WorldConfig, build_world

# method variants: name -> config overrides (the two ablations are settings of existing methods)
VARIANTS: dict[str, list[str]] = {
    "gt": ["method=gt"],
    "majority_vote": ["method=majority_vote"],
    "self_certainty": ["method=self_certainty"],
    "entropy": ["method=entropy"],
    "co_rewarding_i": ["method=co_rewarding_i"],
    "co_rewarding_ii": ["method=co_rewarding_ii"],
    "majority_vote_rephrased": ["method=majority_vote", "data.view=rephrased"],
    "co_rewarding_ii_frozen": ["method=co_rewarding_ii", "teacher.ema=false"],
}


def is_variant(variant: str) -> bool:
    """A name in ``VARIANTS``, any registered reward method, or a plug-in's import path
    ``package.module:ClassName`` (which the config's validation then imports and checks)."""
    from corewarding.rewards import REGISTRY

    return variant in VARIANTS or variant in REGISTRY or ":" in variant


def variant_overrides(variant: str) -> list[str]:
    """The config overrides of one variant (see ``is_variant``)."""
    if not is_variant(variant):
        from corewarding.errors import ConfigError

        raise ConfigError(
            f"unknown micro-world variant {variant!r}; known: {', '.join(VARIANTS)}, or a reward method's "
            "registered name or import path package.module:ClassName"
        )
    return VARIANTS.get(variant, [f"method={variant}"])


def variant_dir_name(variant: str) -> str:
    """A variant's run directory name: a plug-in's import path without its module (no ``:`` in paths)."""
    return variant.rpartition(":")[2]


# reward modes: name -> config overrides (the ``reward.*`` options; see ``corewarding.config.RewardConfig``).
# ``paper`` reproduces the paper's released reward code, as configs/paper/ do: the last \boxed{} only (no box,
# no vote and reward 0), exact-string voting, the Hendrycks normalised string match for the gt baseline.
# ``improved`` is the project's defaults, as configs/improved/: lenient extraction (last box, else "#### X",
# else "The answer is X"), voting by mathematical equivalence, math-verify for the gt baseline.
REWARD_MODES: dict[str, list[str]] = {
    "improved": ["reward.extraction=lenient", "reward.exact_vote=false", "reward.gt_grader=math_verify"],
    "paper": ["reward.extraction=boxed", "reward.exact_vote=true", "reward.gt_grader=string"],
}
DEFAULT_REWARD_MODE = "improved"
BOTH_MODES = "both"


def reward_modes(choice: str) -> list[str]:
    """The reward modes that ``--reward-mode choice`` runs: one of ``REWARD_MODES``, or all of them for
    ``both``."""
    if choice == BOTH_MODES:
        return list(REWARD_MODES)
    if choice not in REWARD_MODES:
        from corewarding.errors import ConfigError

        raise ConfigError(f"reward mode {choice!r}: choose from {', '.join([*REWARD_MODES, BOTH_MODES])}")
    return [choice]


def mode_dir(out: Path, mode: str) -> Path:
    """Where one reward mode's runs and summary files go: the default mode in ``out`` itself (where they
    went before modes existed), any other in ``out/<mode>``, so the modes never overwrite each other."""
    return out if mode == DEFAULT_REWARD_MODE else out / mode


@dataclass
class Budget:
    """The training budget shared by every method in a comparison (the demo uses the same defaults).

    100 steps of 16 question pairs fit the demo's 10-minute bound on a 2-core CPU together with
    pretraining the base model (about 3.3 s a Co-rewarding-I step there, two views of 8 rollouts each).
    """

    steps: int = 100
    lr: float = 7e-5
    kl_coef: float = 0.05
    group_size: int = 8
    questions_per_step: int = 16
    max_new_tokens: int = 64
    temperature: float = 1.0
    val_every: int = 25
    val_n: int = 4
    seed: int = 0

    def overrides(self) -> list[str]:
        return [
            f"trainer.total_steps={self.steps}",
            f"optim.lr={self.lr}",
            f"grpo.kl_coef={self.kl_coef}",
            f"rollout.n={self.group_size}",
            f"teacher.n={self.group_size}",
            f"trainer.batch_questions={self.questions_per_step}",
            f"rollout.max_new_tokens={self.max_new_tokens}",
            f"rollout.temperature={self.temperature}",
            f"validation.temperature={self.temperature}",
            f"validation.n={self.val_n}",
            f"trainer.val_every={self.val_every}",
            f"trainer.seed={self.seed}",
        ]


# the group size is rollout.n (and teacher.n): the option takes what that field takes
GROUP_SIZE = FIELD_DOMAINS["rollout.n"]


def add_experiment_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The options ``demo`` and ``compare`` share: output, seeds, the training budget, evaluation."""
    b = Budget()
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--seed", type=SEED, default=b.seed, help="training and evaluation seed")
    parser.add_argument("--pretrain-seed", type=SEED, default=0, help="seed of the base model's pretraining")
    parser.add_argument("--steps", type=POSITIVE_INT, default=b.steps, help="GRPO steps")
    parser.add_argument("--lr", type=POSITIVE_FLOAT, default=b.lr)
    parser.add_argument(
        "--kl-coef", type=NONNEGATIVE_FLOAT, default=b.kl_coef, help="k3 KL coefficient (0 = no reference)"
    )
    parser.add_argument(
        "--group-size", type=GROUP_SIZE, default=b.group_size, help="rollouts per question and view (G)"
    )
    parser.add_argument("--questions-per-step", type=POSITIVE_INT, default=b.questions_per_step)
    parser.add_argument(
        "--val-every", type=NONNEGATIVE_INT, default=b.val_every, help="validate every N steps (0 = never)"
    )
    parser.add_argument(
        "--eval-n", type=POSITIVE_INT, default=8, help="samples per test question (avg@n, maj@n)"
    )
    parser.add_argument(
        "--test-limit", type=POSITIVE_INT, default=None, help="evaluate on the first N test questions"
    )
    parser.add_argument("--cache-dir", default=None, help="where base models are cached")
    parser.add_argument(
        "--pretrain-base",
        action="store_true",
        help="pretrain the base model here (or reuse one cached) instead of the one shipped with the package",
    )
    parser.add_argument("--no-progress", action="store_true")


def budget_from_args(args: argparse.Namespace) -> Budget:
    return Budget(
        steps=args.steps,
        lr=args.lr,
        kl_coef=args.kl_coef,
        group_size=args.group_size,
        questions_per_step=args.questions_per_step,
        val_every=args.val_every,
        seed=args.seed,
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``run_demo`` / ``run_compare`` that come straight from the shared options."""
    return {
        "eval_n": args.eval_n,
        "pretrain_seed": args.pretrain_seed,
        "test_limit": args.test_limit,
        "cache_dir": Path(args.cache_dir) if args.cache_dir else None,
        "use_shipped_base": not args.pretrain_base,
        "progress": not args.no_progress,
    }


@dataclass
class Setup:
    """A written world and the base model trained for it."""

    world_config: WorldConfig
    data_dir: Path
    base_model: Path


def prepare(
    out_dir: Path,
    world_config: WorldConfig | None = None,
    pretrain_seed: int = 0,
    pretrain_config: Any = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    use_shipped_base: bool = True,
) -> Setup:
    """Write the world's parquet files under ``out_dir/data`` and get its base model (shipped, cached or
    pretrained now: see ``get_base_model``)."""
    from corewarding.microworld.base_model import get_base_model

    world_config = world_config or WorldConfig()
    world = build_world(config=world_config)
    data_dir = out_dir / "data"
    world.write(data_dir)
    base = get_base_model(
        cache_dir=cache_dir,
        seed=pretrain_seed,
        world_config=world_config,
        config=pretrain_config,
        progress=progress,
        use_shipped=use_shipped_base,
    )
    return Setup(world_config, data_dir, Path(base))


def train_config(
    setup: Setup,
    variant: str,
    budget: Budget,
    output_dir: Path,
    run_name: str,
    extra: list[str] | None = None,
) -> Config:
    """The ordinary training config for one method variant on the micro-world."""
    variant_config = variant_overrides(variant)
    d = setup.data_dir
    overrides = [
        f"model.name_or_path={setup.base_model}",
        "model.dtype=float32",
        "trainer.export_dtype=float32",  # evaluated on CPU in fp32, as trained
        f"data.train={d / FILE_NAMES[('train', 'original')]}",
        f"data.train_rephrased={d / FILE_NAMES[('train', 'rephrased')]}",
        f"data.val={d / FILE_NAMES[('val', 'original')]}",
        "data.max_prompt_length=256",
        "rollout.batch_size=512",
        "optim.micro_batch_size=128",
        "optim.warmup_ratio=0.0",
        "optim.schedule=constant",
        "optim.weight_decay=0.0",
        "validation.before_training=true",
        "trainer.sample_rollouts=8",
        f"trainer.save_every={budget.steps}",
        "trainer.keep_checkpoints=1",
        f"trainer.output_dir={output_dir}",
        f"trainer.run_name={run_name}",
        *budget.overrides(),
        *variant_config,
        *(extra or []),
    ]
    return load_config(None, overrides)


def check_before_work(
    out: Path,
    budget: Budget,
    runs: list[tuple[str, list[str]]],
    cache_dir: Path | None = None,
) -> None:
    """Refuse what would fail later, before the world is written or a model loaded or pretrained.

    ``out`` (and ``cache_dir`` when given) must be folders that can be written, and each ``(variant, extra
    overrides)`` in ``runs`` must give a valid training config under ``budget``. The configs are the ones
    ``train_config`` builds later, with placeholder paths for the data and the base model (validation does
    not open them), so a budget or method that cannot train fails now and not after the base model's
    evaluation, or after the first methods of a comparison have trained.
    """
    require_output_dir(out, "--out")
    if cache_dir is not None:
        require_output_dir(cache_dir, "--cache-dir")
    placeholder = Setup(WorldConfig(), out / "data", out / "base-model")
    for variant, extra in runs:
        train_config(placeholder, variant, budget, out, variant_dir_name(variant), extra=extra)


def evaluate_model(
    model_dir: Path,
    questions: list,
    n: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 1234,
    progress: bool = True,
    desc: str = "eval",
) -> dict[str, float]:
    """avg@n / pass@n / maj@n of a saved model on ``questions`` (sampling at ``temperature``)."""
    from corewarding.evaluation.evaluate import evaluate
    from corewarding.rollout.hf_engine import HFRolloutEngine
    from corewarding.rollout.types import SamplingParams

    engine = HFRolloutEngine.from_pretrained(str(model_dir), device="cpu", dtype="float32", batch_size=512)
    sampling = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    result = evaluate(engine, questions, n, sampling, progress=progress, desc=desc)
    return result.metrics


def evaluation_settings(budget: Budget, n: int, progress: bool) -> dict[str, Any]:
    """Test-set sampling for every model of one experiment, base and trained alike.

    Same n, temperature, length and seed for all of them, so before/after and method-to-method differences
    are the models' and not the sampler's.
    """
    return {
        "n": n,
        "temperature": budget.temperature,
        "max_new_tokens": budget.max_new_tokens,
        "seed": budget.seed + 1234,
        "progress": progress,
    }


def test_questions(setup: Setup) -> list:
    from corewarding.data import load_questions

    # the parquet prompt column carries the world's own system prompt
    return load_questions(setup.data_dir / FILE_NAMES[("test", "original")])


def final_checkpoint(run_dir: Path) -> Path:
    from corewarding.training.checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"no finished checkpoint in {run_dir}")
    return found[1]


def fresh_dir(path: Path) -> Path:
    """Remove a previous run of this experiment (the demo and compare own their output folders)."""
    if path.exists():
        shutil.rmtree(path)
    return path
