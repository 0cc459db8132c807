"""Co-rewarding inside TRL: reward functions for ``trl.GRPOTrainer``, and the batch layout Co-rewarding-I needs.

* ``majority_vote_reward``: 1 for a completion whose answer agrees with the majority answer of its own
  group (the G completions of one prompt), else 0.
* ``co_rewarding_i_reward``: Co-rewarding-I. The completions of question x are rewarded by agreement with
  the majority answer of the completions of its rephrasing x', and vice versa.

Both call corewarding's own reward methods (``corewarding.rewards``: ``majority_vote`` and
``co_rewarding_i`` through ``score_step``), so answers are extracted, voted on and matched exactly as in
corewarding's trainer: by the answer engine (``corewarding.answers``), whose equivalence checks run in a
worker pool with a per-comparison timeout and never hang a step. Options: ``extraction`` (``lenient`` or
``boxed``, the paper's last-box rule) and ``exact_vote`` (vote and match by exact string, the paper's rule,
instead of by mathematical equivalence).

Co-rewarding-I needs both views of a question in the *same* reward call. What TRL 1.16.0 does (line numbers
in ``trl/trainer/grpo_trainer.py`` unless said otherwise):

* A reward function is called with ``prompts``, ``completions`` and ``completion_ids``, one entry per
  completion, and every other dataset column as a keyword argument, also one value per completion
  (``_calculate_rewards``, 1579-1585; the call, 1624-1628), plus ``trainer_state``, ``log_extra`` and
  ``log_metric`` (1588-1594). Conversational completions are ``[{"role": "assistant", "content": ...}]``
  (2229-2247).
* ``_get_train_sampler`` (1280-1316) builds a ``RepeatSampler`` (``trl/trainer/utils.py`` 859-952) with
  ``shuffle=args.shuffle_dataset``: it permutes the row indices (930-935), cuts them into chunks of
  ``generation_batch_size // num_generations`` distinct rows (939-943, dropping a partial last chunk) and
  yields each row of a chunk ``num_generations`` times in a row (944-949). The G completions of one prompt
  are therefore adjacent, and GRPO normalises rewards over those blocks (``rewards.view(-1,
  num_generations)``, 2765).
* ``get_train_dataloader`` loads ``per_device_train_batch_size * steps_per_generation`` rows per process
  (1275); ``_prepare_inputs`` generates and scores that whole *generation batch* at once, once every
  ``steps_per_generation * num_iterations`` steps (1538-1541), so the reward function sees the full local
  generation batch, not a micro-batch. Accelerate hands the sampler's consecutive batches to the processes
  in turn (``accelerate/data_loader.py`` 226), so each process scores one contiguous slice of a chunk;
  rewards are gathered across processes only afterwards (1681). ``GRPOConfig`` only requires the *global*
  generation batch to be a multiple of ``num_generations`` (``grpo_config.py`` 1131): one process may hold
  part of a group.
* ``shuffle_dataset`` (``grpo_config.py`` 507, default True) permutes single rows, which separates the two
  views of a question. Iterable datasets are streamed through ``repeat_iterable_dataset`` instead of the
  sampler, after a buffered row shuffle when ``shuffle_dataset`` is on (1260-1270).

The mechanism, therefore:

1. ``pair_dataset`` lays the training set out pair by pair, ``[x_0, x'_0, x_1, x'_1, ...]``, with a shared
   ``pair_id`` column and a ``view`` column (``original`` / ``rephrased``).
2. ``PairRepeatSampler`` is ``RepeatSampler`` with the permutation drawn over pairs instead of rows, so
   rows ``2k`` and ``2k+1`` always stay adjacent; ``CoRewardingGRPOTrainer`` (a ``GRPOTrainer`` subclass)
   returns it from ``_get_train_sampler`` (and from ``_get_eval_sampler`` for pair-laid-out eval sets).
3. With a per-process generation batch (``per_device_train_batch_size * steps_per_generation``) that is a
   multiple of ``2 * num_generations``, every chunk and every process slice then holds whole pairs, each
   view's G completions together; ``CoRewardingGRPOTrainer`` checks this, and the dataset layout, at
   construction.
4. The reward function checks on every call that each pair it received has exactly one group of each view,
   and raises ``PairLayoutError`` otherwise: it never rewards a view without its twin.

Without the subclass, ``GRPOTrainer(args=GRPOConfig(shuffle_dataset=False, ...))`` on
``pair_dataset(..., seed=...)`` (pairs shuffled once, ahead of time) gives the same layout, in the same
order every epoch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

try:
    import torch
    from datasets import Dataset, IterableDataset
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "corewarding.integrations.trl needs TRL: pip install 'corewarding[trl]' (trl>=1.16)"
    ) from exc

from corewarding.data.question import Question
from corewarding.errors import DataError
from corewarding.rewards import RolloutGroup, get_reward_method, score_step
from corewarding.rewards.base import VIEWS
from corewarding.rollout.types import Rollout

__all__ = [
    "PAIR_ID_COLUMN",
    "VIEW_COLUMN",
    "CoRewardingGRPOTrainer",
    "CoRewardingIRewardFunc",
    "MajorityVoteRewardFunc",
    "PairLayoutError",
    "PairRepeatSampler",
    "check_pair_layout",
    "co_rewarding_i_reward",
    "completion_text",
    "majority_vote_reward",
    "pair_dataset",
]

PAIR_ID_COLUMN = "pair_id"
VIEW_COLUMN = "view"

_HOW_TO_PAIR = (
    "build the dataset with corewarding.integrations.trl.pair_dataset and train with CoRewardingGRPOTrainer "
    "(or with GRPOTrainer and shuffle_dataset=False on pair_dataset(..., seed=...)), and make "
    "per_device_train_batch_size * steps_per_generation a multiple of 2 * num_generations"
)


class PairLayoutError(DataError, ValueError):
    """The two views of a question are not where Co-rewarding-I needs them (the same reward call)."""


# ------------------------------------------------------------------------------------------ dataset


def _prompt_of(item: Any) -> str | list[dict[str, Any]]:
    if isinstance(item, Question):
        return [dict(m) for m in item.messages]
    if isinstance(item, str):
        return item
    if isinstance(item, Sequence) and all(isinstance(m, Mapping) for m in item):
        return [dict(m) for m in item]
    raise TypeError(
        f"pair_dataset: expected a corewarding Question, a prompt string or a list of chat messages, got "
        f"{type(item).__name__}"
    )


def _pair_id_of(k: int, original: Any, rephrased: Any) -> str:
    if not isinstance(original, Question):
        return f"pair-{k}"
    pid = str(original.extra.get("pair_id", original.id))
    if isinstance(rephrased, Question) and "pair_id" in rephrased.extra:
        other = str(rephrased.extra["pair_id"])
        if other != pid:
            raise PairLayoutError(
                f"pair_dataset: row {k} pairs question {original.id!r} (pair_id {pid!r}) with "
                f"{rephrased.id!r} (pair_id {other!r}); row i of `rephrased` must rephrase row i of `originals`"
            )
    return pid


def pair_dataset(
    originals: Sequence[Any],
    rephrased: Sequence[Any],
    *,
    pair_ids: Sequence[str] | None = None,
    columns: Mapping[str, Sequence[Any]] | None = None,
    seed: int | None = None,
) -> Dataset:
    """A TRL training set with each question and its rephrasing as adjacent rows.

    Row ``i`` of ``rephrased`` is the rephrasing of row ``i`` of ``originals`` (as in corewarding's
    ``*_original`` / ``*_rephrased`` parquet files). Items are corewarding ``Question``s (their chat
    ``messages`` become the prompt, ``extra["pair_id"]`` or the original's id the pair id), prompt strings or
    lists of chat messages. The result has the columns ``prompt``, ``pair_id``, ``view`` and any ``columns``
    given (one value per pair, repeated on both rows), rows in the order ``[x_0, x'_0, x_1, x'_1, ...]``.
    With ``seed`` the pairs (never the rows) are shuffled once, for ``GRPOTrainer(shuffle_dataset=False)``.
    """
    if len(originals) != len(rephrased):
        raise PairLayoutError(
            f"pair_dataset: {len(originals)} originals but {len(rephrased)} rephrasings; every question needs "
            "exactly one rephrasing"
        )
    n = len(originals)
    if n == 0:
        raise PairLayoutError("pair_dataset: no questions")
    if pair_ids is not None and len(pair_ids) != n:
        raise PairLayoutError(f"pair_dataset: {len(pair_ids)} pair_ids for {n} pairs")
    extra = dict(columns or {})
    reserved = {"prompt", PAIR_ID_COLUMN, VIEW_COLUMN} & set(extra)
    if reserved:
        raise ValueError(f"pair_dataset: columns {sorted(reserved)} are set by pair_dataset itself")
    for name, values in extra.items():
        if len(values) != n:
            raise ValueError(f"pair_dataset: column {name!r} has {len(values)} values for {n} pairs")
    ids = (
        [str(p) for p in pair_ids]
        if pair_ids is not None
        else [_pair_id_of(k, o, r) for k, (o, r) in enumerate(zip(originals, rephrased, strict=True))]
    )
    if len(set(ids)) != n:
        dup = next(p for p in ids if ids.count(p) > 1)
        raise PairLayoutError(f"pair_dataset: pair_id {dup!r} occurs more than once; pair ids must be unique")
    order = list(range(n))
    if seed is not None:
        random.Random(seed).shuffle(order)
    rows: dict[str, list[Any]] = {"prompt": [], PAIR_ID_COLUMN: [], VIEW_COLUMN: [], **{c: [] for c in extra}}
    for k in order:
        for view, item in (("original", originals[k]), ("rephrased", rephrased[k])):
            rows["prompt"].append(_prompt_of(item))
            rows[PAIR_ID_COLUMN].append(ids[k])
            rows[VIEW_COLUMN].append(view)
            for c, values in extra.items():
                rows[c].append(values[k])
    return Dataset.from_dict(rows)


def check_pair_layout(dataset: Any, where: str = "dataset") -> None:
    """Raise ``PairLayoutError`` unless rows ``2k`` and ``2k+1`` are the two views of one pair, for every k,
    with pair ids unique (the layout ``pair_dataset`` writes and ``PairRepeatSampler`` relies on)."""
    names = list(getattr(dataset, "column_names", None) or [])
    missing = [c for c in (PAIR_ID_COLUMN, VIEW_COLUMN) if c not in names]
    if missing:
        raise PairLayoutError(f"{where} has no {' / '.join(missing)} column; {_HOW_TO_PAIR}")
    pair_ids = list(dataset[PAIR_ID_COLUMN])
    views = list(dataset[VIEW_COLUMN])
    if len(pair_ids) % 2:
        raise PairLayoutError(f"{where} has {len(pair_ids)} rows, an odd number: some question lacks a view")
    seen: set[Any] = set()
    for k in range(0, len(pair_ids), 2):
        a, b = pair_ids[k], pair_ids[k + 1]
        if a != b or sorted((views[k], views[k + 1])) != sorted(VIEWS):
            raise PairLayoutError(
                f"{where}: rows {k} and {k + 1} are ({a!r}, {views[k]!r}) and ({b!r}, {views[k + 1]!r}); rows "
                f"2k and 2k+1 must be the original and rephrased views of one pair; {_HOW_TO_PAIR}"
            )
        if a in seen:
            raise PairLayoutError(f"{where}: pair_id {a!r} occurs in more than one pair of rows")
        seen.add(a)


# ------------------------------------------------------------------------------------------ sampler


class PairRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` (``trl/trainer/utils.py`` 859-952) over *pairs* of rows.

    Same arguments and the same output structure (chunks of ``batch_size`` distinct rows, each chunk repeated
    ``repeat_count`` times, each row ``mini_repeat_count`` times in a row; ``__len__`` unchanged), but the
    shuffle permutes pairs ``(2k, 2k+1)`` rather than rows, and ``batch_size`` must be even, so a chunk never
    splits a pair. The dataset must hold an even number of rows laid out pair by pair (``pair_dataset``).
    """

    def __init__(
        self,
        data_source: Any,
        mini_repeat_count: int,
        batch_size: int = 2,
        repeat_count: int = 1,
        shuffle: bool = True,
        seed: int | None = None,
    ):
        super().__init__(
            data_source,
            mini_repeat_count=mini_repeat_count,
            batch_size=batch_size,
            repeat_count=repeat_count,
            shuffle=shuffle,
            seed=seed,
        )
        if batch_size % 2:
            raise PairLayoutError(
                f"PairRepeatSampler: batch_size={batch_size} distinct rows per chunk would split a pair; "
                "it must be even (generation_batch_size // num_generations)"
            )
        if self.num_samples % 2:
            raise PairLayoutError(
                f"PairRepeatSampler: the dataset has {self.num_samples} rows; a pair-laid-out dataset has an "
                "even number"
            )

    def __iter__(self):
        n_pairs = self.num_samples // 2
        if self.shuffle:
            pairs = torch.randperm(n_pairs, generator=self.generator).tolist()
        else:
            pairs = list(range(n_pairs))
        indexes = [row for p in pairs for row in (2 * p, 2 * p + 1)]
        chunks = [indexes[i : i + self.batch_size] for i in range(0, len(indexes), self.batch_size)]
        for chunk in chunks:
            if len(chunk) != self.batch_size:  # RepeatSampler drops a partial last chunk too
                continue
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index


# ------------------------------------------------------------------------------------------ trainer


def check_generation_geometry(args: Any) -> None:
    """Raise ``PairLayoutError`` unless each process's generation batch holds whole pairs of whole groups:
    ``per_device_train_batch_size * steps_per_generation`` (its size, ``grpo_trainer.py`` 1275) must be a
    multiple of ``2 * num_generations``."""
    local = args.per_device_train_batch_size * args.steps_per_generation
    need = 2 * args.num_generations
    if local % need:
        raise PairLayoutError(
            f"Co-rewarding-I: each process generates and scores per_device_train_batch_size "
            f"({args.per_device_train_batch_size}) x steps_per_generation ({args.steps_per_generation}) = "
            f"{local} completions at a time, which is not a multiple of 2 x num_generations = {need}: the two "
            f"views of a question (num_generations completions each) would not always be scored together. "
            f"Choose per_device_train_batch_size * steps_per_generation = {need} x (questions per batch)"
        )


def _has_pair_columns(dataset: Any) -> bool:
    names = getattr(dataset, "column_names", None) or []
    return PAIR_ID_COLUMN in names and VIEW_COLUMN in names


class CoRewardingGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` that keeps the two views of every question in the same generation batch.

    Takes exactly ``GRPOTrainer``'s arguments. Differences: ``_get_train_sampler`` returns a
    ``PairRepeatSampler`` with the arguments TRL gives its ``RepeatSampler`` (``grpo_trainer.py``
    1309-1316), so ``shuffle_dataset`` reshuffles pairs each epoch instead of rows; ``_get_eval_sampler``
    does the same for eval sets that have ``pair_id`` / ``view`` columns (others keep TRL's sampler); and the
    constructor checks that the training set is laid out pair by pair (``check_pair_layout``) and that each
    process's generation batch holds whole pairs (``check_generation_geometry``). An iterable training set
    is streamed by TRL without a sampler (1260-1270), so it must already be pair-laid-out and
    ``shuffle_dataset`` must be False.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        train_dataset = kwargs.get("train_dataset", args[3] if len(args) > 3 else None)
        grpo_args = kwargs.get("args", args[2] if len(args) > 2 else None)
        if grpo_args is not None:
            self._check_pair_setup(grpo_args, train_dataset)
        super().__init__(*args, **kwargs)
        if grpo_args is None:
            self._check_pair_setup(self.args, self.train_dataset)

    @staticmethod
    def _check_pair_setup(args: Any, train_dataset: Any) -> None:
        check_generation_geometry(args)
        if isinstance(train_dataset, IterableDataset):
            if args.shuffle_dataset:
                raise PairLayoutError(
                    "CoRewardingGRPOTrainer: with an IterableDataset TRL shuffles single rows of the stream "
                    "(grpo_trainer.py 1264), which separates the two views of a question; set "
                    "shuffle_dataset=False and stream the rows pair by pair (shuffle the pairs beforehand)"
                )
        elif train_dataset is not None:
            check_pair_layout(train_dataset, where="train_dataset")

    def _get_train_sampler(self, dataset: Any = None) -> PairRepeatSampler:
        if dataset is None:
            dataset = self.train_dataset
        return PairRepeatSampler(
            data_source=dataset,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        if not _has_pair_columns(eval_dataset):
            return super()._get_eval_sampler(eval_dataset)
        check_pair_layout(eval_dataset, where="eval_dataset")
        need = 2 * self.num_generations_eval
        if self.args.eval_batch_size % need:  # the eval loader's batch per process (grpo_trainer.py 1372)
            raise PairLayoutError(
                f"Co-rewarding-I evaluation: the eval batch ({self.args.eval_batch_size} rows per process) must "
                f"be a multiple of 2 x num_generations_eval = {need}"
            )
        # TRL's eval sampler: one row at a time, shuffled with the seed (grpo_trainer.py 1318-1324)
        return PairRepeatSampler(
            data_source=eval_dataset,
            mini_repeat_count=self.num_generations_eval,
            batch_size=2,
            seed=self.args.seed,
        )


# ------------------------------------------------------------------------------------------ rewards


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string (standard format) or a list of messages (conversational,
    ``grpo_trainer.py`` 2229-2247), whose last message's content is the answer-bearing turn."""
    if isinstance(completion, str):
        return completion
    message = completion
    if isinstance(completion, Sequence) and not isinstance(completion, Mapping):
        if not completion:
            return ""
        message = completion[-1]
    content = message.get("content", "") if isinstance(message, Mapping) else message
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # content blocks: [{"type": "text", "text": ...}, ...]
        return "".join(
            str(b.get("text", "")) if isinstance(b, Mapping) else str(b)
            for b in content
            if not isinstance(b, Mapping) or b.get("type", "text") == "text"
        )
    return "" if content is None else str(content)


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def _blocks(keys: list[Any], num_generations: int | None, who: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each group of completions: the runs of equal ``keys`` TRL's sampler produces."""
    n = len(keys)
    if num_generations is not None:
        if n % num_generations:
            raise PairLayoutError(
                f"{who}: {n} completions is not a whole number of groups of num_generations={num_generations}"
            )
        spans = [(s, s + num_generations) for s in range(0, n, num_generations)]
        for s, e in spans:
            if len(set(map(repr, keys[s:e]))) != 1:
                raise PairLayoutError(
                    f"{who}: completions {s}..{e - 1} belong to different prompts; TRL's sampler yields the "
                    f"num_generations={num_generations} completions of a prompt in a row (is num_generations right, "
                    "and is the per-process generation batch a multiple of it?)"
                )
        return spans
    spans, start = [], 0
    for i in range(1, n + 1):
        if i == n or keys[i] != keys[start]:
            spans.append((start, i))
            start = i
    sizes = {e - s for s, e in spans}
    if len(sizes) != 1 or min(sizes) < 2:
        raise PairLayoutError(
            f"{who}: the completions do not come in equal runs of at least 2 per prompt (run lengths "
            f"{sorted(sizes)}), so the groups cannot be told apart; pass num_generations=... explicitly"
        )
    return spans


class _VotingRewardFunc:
    """A TRL reward function around one of corewarding's voting reward methods (callable, picklable)."""

    method_name: ClassVar[str]

    def __init__(
        self, *, extraction: str = "lenient", exact_vote: bool = False, num_generations: int | None = None
    ) -> None:
        # the method validates the options (unknown extraction, wrong types) right here, not mid-training
        self.method = get_reward_method(self.method_name, extraction=extraction, exact_vote=exact_vote)
        if num_generations is not None and (
            isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 2
        ):
            raise ValueError(f"{self.method_name}: num_generations={num_generations!r} must be an int >= 2")
        self.extraction = extraction
        self.exact_vote = exact_vote
        self.num_generations = num_generations
        # TRL names a reward function by its __name__ (trl/trainer/utils.py get_callable_name, 236-244): it
        # appears in the logged metrics as rewards/<name>/mean
        self.__name__ = self.method_name

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(extraction={self.extraction!r}, exact_vote={self.exact_vote!r}, "
            f"num_generations={self.num_generations!r})"
        )

    def _group_keys(self, prompts: list[Any], kwargs: dict[str, Any]) -> list[tuple[str | None, str, str]]:
        """Per completion: (pair id or None, view, prompt key); the completions of one group share all three."""
        raise NotImplementedError

    def _check_groups(self, groups: list[RolloutGroup]) -> None:
        """Hook for layout checks beyond the block structure."""

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        who = self.method_name
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{who}: {len(prompts)} prompts for {n} completions")
        if n == 0:
            return []
        keys = self._group_keys(prompts, kwargs)
        spans = _blocks(keys, self.num_generations, who)
        ids = completion_ids if completion_ids is not None else [[] for _ in range(n)]
        groups = []
        for g, (s, e) in enumerate(spans):
            pair_id, view, _ = keys[s]
            pair_id = f"group-{g}" if pair_id is None else pair_id
            question = Question(id=f"{pair_id}/{view}", question="", messages=[])
            rollouts = [
                Rollout(prompt_ids=[], response_ids=list(ids[i]), text=completion_text(completions[i]))
                for i in range(s, e)
            ]
            groups.append(RolloutGroup(question=question, view=view, pair_id=pair_id, rollouts=rollouts))
        self._check_groups(groups)
        scores = score_step(self.method, groups)
        rewards = [float(r) for row in scores.rewards for r in row]
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if callable(log_metric):  # TRL >= 1.x passes it (grpo_trainer.py 1594); averaged per logging step
            for name, value in sorted(scores.metrics.items()):
                if not name.startswith("reward/"):  # TRL logs the reward itself
                    log_metric(f"{who}/{name}", float(value))
        log_extra: Callable[[str, list], None] | None = kwargs.get("log_extra")
        if callable(log_extra):  # one value per completion, for the completions table (1563, 2842-2845)
            labels = [scores.pseudo_labels[g] for g, (s, e) in enumerate(spans) for _ in range(s, e)]
            log_extra(f"{who}/pseudo_label", labels)
        return rewards


class MajorityVoteRewardFunc(_VotingRewardFunc):
    """TRL reward function: 1 for a completion whose answer agrees with its group's majority answer, else 0.

    A group is the ``num_generations`` completions of one prompt, which TRL's sampler yields in a row (see
    the module docstring); with ``num_generations=None`` the groups are the runs of identical prompts (they
    must all have the same length, at least 2). Scored by corewarding's ``majority_vote`` method.
    """

    method_name = "majority_vote"

    def _group_keys(self, prompts: list[Any], kwargs: dict[str, Any]) -> list[tuple[str | None, str, str]]:
        # pair_id / view columns, when the dataset has them, only label the groups (per-view reward metrics)
        n = len(prompts)
        pair_ids = kwargs.get(PAIR_ID_COLUMN)
        views = kwargs.get(VIEW_COLUMN)
        if not isinstance(pair_ids, list) or len(pair_ids) != n:
            pair_ids = [None] * n
        if not isinstance(views, list) or len(views) != n or any(v not in VIEWS for v in views):
            views = ["original"] * n
        return [
            (None if pid is None else str(pid), v, _prompt_key(p))
            for pid, v, p in zip(pair_ids, views, prompts, strict=True)
        ]


class CoRewardingIRewardFunc(_VotingRewardFunc):
    """TRL reward function for Co-rewarding-I: the completions of each view are rewarded 1 when their answer
    agrees with the majority answer of the *other* view's completions of the same pair, else 0.

    Needs the dataset columns ``pair_id`` and ``view`` (``pair_dataset`` writes them) and both views of
    every pair in each call (``CoRewardingGRPOTrainer`` arranges it); raises ``PairLayoutError`` when a pair
    arrives with one view only, or with a view twice. Scored by corewarding's ``co_rewarding_i`` method.
    """

    method_name = "co_rewarding_i"

    def _group_keys(self, prompts: list[Any], kwargs: dict[str, Any]) -> list[tuple[str | None, str, str]]:
        who = self.method_name
        missing = [c for c in (PAIR_ID_COLUMN, VIEW_COLUMN) if c not in kwargs]
        if missing:
            raise PairLayoutError(
                f"{who}: the reward function received no {' / '.join(missing)} column (TRL passes every "
                f"dataset column as a keyword argument); {_HOW_TO_PAIR}"
            )
        pair_ids, views = kwargs[PAIR_ID_COLUMN], kwargs[VIEW_COLUMN]
        if len(pair_ids) != len(prompts) or len(views) != len(prompts):
            raise ValueError(
                f"{who}: pair_id / view columns are not aligned with the {len(prompts)} completions"
            )
        bad = sorted({repr(v) for v in views if v not in VIEWS})
        if bad:
            raise PairLayoutError(f"{who}: view values {', '.join(bad)}; expected one of {VIEWS}")
        return [
            (str(pid), str(v), _prompt_key(p)) for pid, v, p in zip(pair_ids, views, prompts, strict=True)
        ]

    def _check_groups(self, groups: list[RolloutGroup]) -> None:
        by_pair: dict[str, list[str]] = {}
        for g in groups:
            by_pair.setdefault(g.pair_id, []).append(g.view)
        for pair_id, views in by_pair.items():
            if sorted(views) == sorted(VIEWS):
                continue
            if len(views) == 1:
                (present,) = views
                missing = "rephrased" if present == "original" else "original"
                raise PairLayoutError(
                    f"{self.method_name}: this reward call holds the {present} view of pair {pair_id!r} but not "
                    f"its {missing} view, so it has no cross-view pseudo-label (refusing to reward it without "
                    f"one). Both views must be generated in the same batch: {_HOW_TO_PAIR}"
                )
            raise PairLayoutError(
                f"{self.method_name}: pair {pair_id!r} arrives as groups of views {views} in one reward call; "
                f"expected one group per view (duplicate rows in the dataset?)"
            )


def majority_vote_reward(
    *, extraction: str = "lenient", exact_vote: bool = False, num_generations: int | None = None
) -> MajorityVoteRewardFunc:
    """Majority-vote (self-consistency) reward function for ``trl.GRPOTrainer(reward_funcs=...)``.

    ``extraction``: ``lenient`` (last box, ``####``, "the answer is") or ``boxed`` (the paper's last-box
    rule); ``exact_vote``: vote and match by exact string instead of mathematical equivalence;
    ``num_generations``: the group size, checked on every call (default: inferred from runs of equal
    prompts).
    """
    return MajorityVoteRewardFunc(
        extraction=extraction, exact_vote=exact_vote, num_generations=num_generations
    )


def co_rewarding_i_reward(
    *, extraction: str = "lenient", exact_vote: bool = False, num_generations: int | None = None
) -> CoRewardingIRewardFunc:
    """Co-rewarding-I reward function for ``trl.GRPOTrainer(reward_funcs=...)``, to be used with a
    ``pair_dataset`` and ``CoRewardingGRPOTrainer``. Options as for ``majority_vote_reward``; with
    ``num_generations=None`` the groups are the runs of equal (pair_id, view)."""
    return CoRewardingIRewardFunc(
        extraction=extraction, exact_vote=exact_vote, num_generations=num_generations
    )
