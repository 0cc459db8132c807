"""A micro-world: train / validation / test splits of arithmetic word problems as ordinary ``Question``s.

The splits are cut by *underlying problem* (numbers + operations), never by wording, so no held-out
question is a rephrasing of a training one. Training questions come in Co-rewarding-I pairs (original,
rephrased) that share ``extra["pair_id"]``; validation and test are original views. ``write`` saves the
splits as verl-layout parquet files, so the demo reads them back through the same loaders as real data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corewarding.data.question import Question
from corewarding.microworld.problems import Problem, generate_problems

MICRO_SYSTEM_PROMPT = "Put the final answer in \\boxed{}."
SOURCE = "microworld"
SPLITS = ("train", "val", "test")
FILE_NAMES = {
    ("train", "original"): "train_original.parquet",
    ("train", "rephrased"): "train_rephrased.parquet",
    ("val", "original"): "val.parquet",
    ("test", "original"): "test.parquet",
}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a world; its ``fingerprint`` names cached artifacts built from it."""

    seed: int = 0
    n_train: int = 2048
    n_val: int = 128
    n_test: int = 256
    n_rephrasings: int = 2
    min_steps: int = 2
    max_steps: int = 3
    max_value: int = 50
    max_operand: int = 20
    max_start: int = 20
    system_prompt: str = MICRO_SYSTEM_PROMPT

    def problem_kwargs(self) -> dict:
        """The generator settings (everything but the seed, sizes and prompt)."""
        return {
            "n_rephrasings": self.n_rephrasings,
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
            "max_value": self.max_value,
            "max_operand": self.max_operand,
            "max_start": self.max_start,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class MicroWorld:
    """The generated problems of each split and their ``Question`` views."""

    config: WorldConfig
    problems: dict[str, list[Problem]]
    train: list[Question] = field(init=False)
    val: list[Question] = field(init=False)
    test: list[Question] = field(init=False)
    train_pairs: list[tuple[Question, Question]] = field(init=False)

    def __post_init__(self) -> None:
        self.train = self.questions("train", "original")
        self.val = self.questions("val", "original")
        self.test = self.questions("test", "original")
        self.train_pairs = list(zip(self.train, self.questions("train", "rephrased"), strict=True))

    def questions(self, split: str, view: str = "original", rephrasing: int = 0) -> list[Question]:
        """One view of a split: ``original`` or ``rephrased`` (the ``rephrasing``-th rewording).

        Both views of problem ``k`` share ``extra["pair_id"]`` and ``extra["index"] = k``.
        """
        if split not in self.problems:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if view not in ("original", "rephrased"):
            raise ValueError(f"unknown view {view!r}; expected 'original' or 'rephrased'")
        out = []
        for k, problem in enumerate(self.problems[split]):
            pair_id = f"{SOURCE}-{split}-{k}"
            text = problem.text if view == "original" else problem.rephrasings[rephrasing]
            out.append(
                Question.from_text(
                    id=pair_id if view == "original" else f"{pair_id}-rephrased",
                    question=text,
                    gold=str(problem.answer),
                    source=SOURCE,
                    system_prompt=self.config.system_prompt,
                    extra={"index": k, "pair_id": pair_id, "view": view, "split": split},
                )
            )
        return out

    def all_texts(self) -> Iterator[str]:
        """Every question wording and correct solution of the world (for building a vocabulary)."""
        yield self.config.system_prompt
        for problems in self.problems.values():
            for problem in problems:
                yield from problem.views
                yield problem.solution

    def keys(self) -> set[str]:
        """The underlying-problem keys of all splits (to keep other problem sets disjoint from them)."""
        return {p.key for problems in self.problems.values() for p in problems}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the verl-layout parquet files (train_original, train_rephrased, val, test).

        Row ``i`` of ``train_rephrased.parquet`` is the rephrasing of row ``i`` of
        ``train_original.parquet``, as in the real Co-rewarding data.
        """
        from corewarding.data import save_questions_parquet

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for (split, view), name in FILE_NAMES.items():
            written[f"{split}_{view}" if split == "train" else split] = Path(
                save_questions_parquet(self.questions(split, view), out / name)
            )
        return written


def build_world(
    seed: int = 0,
    n_train: int = 2048,
    n_val: int = 128,
    n_test: int = 256,
    config: WorldConfig | None = None,
    **generator_settings,
) -> MicroWorld:
    """Generate a world deterministically from ``seed`` (or from a full ``config``).

    All problems are drawn as one distinct set and then cut into consecutive train / val / test blocks,
    so the split is by underlying problem.
    """
    if config is None:
        config = WorldConfig(seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, **generator_settings)
    total = config.n_train + config.n_val + config.n_test
    problems = generate_problems(total, config.seed, **config.problem_kwargs())
    bounds = [0, config.n_train, config.n_train + config.n_val, total]
    splits = {name: problems[bounds[i] : bounds[i + 1]] for i, name in enumerate(SPLITS)}
    return MicroWorld(config=config, problems=splits)
