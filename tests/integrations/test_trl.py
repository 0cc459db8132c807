"""``corewarding.integrations.trl``: reward functions and a pair-aligned trainer for TRL's GRPOTrainer.

The end-to-end tests train the shipped micro-world base model (0.8M parameters, its own chat template) with
TRL for two steps on CPU and check every reward TRL used against corewarding's own reward methods.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest

pytest.importorskip("trl")

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from corewarding.data.question import Question
from corewarding.errors import ConfigError
from corewarding.integrations.trl import (
    CoRewardingGRPOTrainer,
    PairLayoutError,
    PairRepeatSampler,
    check_pair_layout,
    co_rewarding_i_reward,
    majority_vote_reward,
    pair_dataset,
)
from corewarding.microworld.base_model import SHIPPED_DIR
from corewarding.microworld.world import build_world
from corewarding.rewards import RolloutGroup, get_reward_method, score_step
from corewarding.rollout.types import Rollout

G = 4  # completions per prompt (num_generations)


@functools.cache
def _world():
    return build_world()  # the default world: the one the shipped base model's tokenizer was built for


def _pairs(n: int) -> tuple[list[Question], list[Question]]:
    world = _world()
    return world.questions("train", "original")[:n], world.questions("train", "rephrased")[:n]


def _boxed(answer: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": f"so it is \\boxed{{{answer}}}"}]


def _call_kwargs(rows: list[tuple[str, str]], answers: list[str], g: int = 2) -> dict:
    """Reward-function keyword arguments as TRL builds them: each row repeated g times in a row."""
    expanded = [row for row in rows for _ in range(g)]
    assert len(answers) == len(expanded)
    return {
        "prompts": [f"question {pid} ({view})" for pid, view in expanded],
        "completions": [_boxed(a) for a in answers],
        "completion_ids": [[1, 2, 3] for _ in answers],
        "pair_id": [pid for pid, _ in expanded],
        "view": [view for _, view in expanded],
    }


# ------------------------------------------------------------------------------------ layout, sampler


def test_pair_dataset_interleaves_views_and_shuffles_whole_pairs():
    originals, rephrased = _pairs(6)
    ds = pair_dataset(originals, rephrased)
    assert ds.column_names == ["prompt", "pair_id", "view"]
    assert ds["view"][:4] == ["original", "rephrased", "original", "rephrased"]
    assert ds["pair_id"][:2] == [originals[0].extra["pair_id"]] * 2
    assert ds[1]["prompt"] == rephrased[0].messages
    check_pair_layout(ds)

    shuffled = pair_dataset(originals, rephrased, seed=3, columns={"gold": [q.gold for q in originals]})
    check_pair_layout(shuffled)
    assert shuffled["pair_id"] != ds["pair_id"]
    assert sorted(shuffled["pair_id"]) == sorted(ds["pair_id"])
    assert shuffled["gold"][0] == shuffled["gold"][1]

    rows_shuffled = ds.shuffle(seed=0)
    with pytest.raises(PairLayoutError, match="rows 2k and 2k\\+1"):
        check_pair_layout(rows_shuffled)
    with pytest.raises(PairLayoutError, match="rephrasing"):
        pair_dataset(originals, rephrased[:-1])
    with pytest.raises(PairLayoutError, match="pair_id"):
        pair_dataset(originals, rephrased[1:] + rephrased[:1])  # misaligned: row i is not row i's twin


def test_pair_sampler_keeps_pairs_adjacent_and_matches_trl_structure():
    ds = pair_dataset(*_pairs(9))
    kwargs = {"mini_repeat_count": 3, "batch_size": 4, "repeat_count": 2, "seed": 0}
    sampler = PairRepeatSampler(ds, **kwargs)
    epochs = [list(sampler), list(sampler)]
    assert len(sampler) == len(RepeatSampler(ds, **kwargs)) == len(epochs[0])
    assert epochs[0] != epochs[1]  # reshuffled every epoch, as TRL's sampler is
    for indices in epochs:
        rows = indices[::3]  # each row 3 times in a row
        assert all(indices[i : i + 3] == [rows[i // 3]] * 3 for i in range(0, len(indices), 3))
        chunks = [rows[i : i + 4] for i in range(0, len(rows), 4)]
        for c in range(0, len(chunks), 2):  # each chunk twice in a row (repeat_count)
            assert chunks[c] == chunks[c + 1]
            assert chunks[c][0] % 2 == 0 and chunks[c][1] == chunks[c][0] + 1
            assert chunks[c][2] % 2 == 0 and chunks[c][3] == chunks[c][2] + 1
        assert len({i // 2 for i in rows}) == 8  # 9 pairs, chunks of 2 pairs: the partial last chunk dropped
    assert list(PairRepeatSampler(ds, 1, batch_size=4, shuffle=False)) == list(range(16))
    with pytest.raises(PairLayoutError, match="even"):
        PairRepeatSampler(ds, mini_repeat_count=2, batch_size=3)


def test_trainer_rejects_layouts_that_split_pairs_before_loading_the_model(tmp_path):
    ds = pair_dataset(*_pairs(4))
    # 12 completions per process at a time is not a multiple of 2 x 4: a pair's views could be split
    bad = _grpo_args(tmp_path, per_device_train_batch_size=12, num_generations=4)
    with pytest.raises(PairLayoutError, match="multiple of 2 x num_generations = 8"):
        CoRewardingGRPOTrainer(
            model="not-a-model", reward_funcs=co_rewarding_i_reward(), args=bad, train_dataset=ds
        )
    good = _grpo_args(tmp_path, per_device_train_batch_size=8, num_generations=4)
    with pytest.raises(PairLayoutError, match="rows 2k and 2k\\+1"):
        CoRewardingGRPOTrainer(
            model="not-a-model",
            reward_funcs=co_rewarding_i_reward(),
            args=good,
            train_dataset=ds.shuffle(seed=1),
        )


# ------------------------------------------------------------------------------- reward functions


def test_co_rewarding_reward_uses_the_other_views_majority_and_refuses_a_lone_view():
    reward = co_rewarding_i_reward()
    assert reward.__name__ == "co_rewarding_i"
    rows = [("p0", "original"), ("p0", "rephrased"), ("p1", "rephrased"), ("p1", "original")]
    # p0: the original view votes 7, the rephrased one 8, so the original's completions earn 1 for saying 8
    # and the rephrased one's for saying 7; p1: both views vote 5
    answers = ["7", "7", "8", "8", "8", "7", "5", "5", "5", "5", "6", "5"]
    logged: dict[str, float] = {}
    out = reward(**_call_kwargs(rows, answers, g=3), log_metric=logged.__setitem__)
    assert out == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert logged["co_rewarding_i/co_rewarding/view_agreement"] == 0.5

    with pytest.raises(PairLayoutError, match="holds the original view of pair 'p2' but not its rephrased"):
        reward(**_call_kwargs([*rows, ("p2", "original")], [*answers, "1", "1", "1"], g=3))
    with pytest.raises(PairLayoutError, match="no pair_id / view column"):
        reward(prompts=["q", "q"], completions=[_boxed("1")] * 2, completion_ids=[[1], [1]])
    doubled = _call_kwargs([*rows, ("p1", "original")], [*answers, "1", "1", "1"], g=3)  # a duplicate row
    with pytest.raises(PairLayoutError, match="equal runs"):  # merged with its twin: groups are ambiguous
        reward(**doubled)
    with pytest.raises(PairLayoutError, match="expected one group per view"):
        co_rewarding_i_reward(num_generations=3)(**doubled)
    with pytest.raises(PairLayoutError, match="num_generations=2"):
        co_rewarding_i_reward(num_generations=2)(**_call_kwargs(rows, answers, g=3))


def test_reward_options_reach_the_answer_engine():
    rows = [("p0", "original"), ("p0", "rephrased")]
    kw = _call_kwargs(rows, ["0.50", "0.50", "2", "0.5", "0.5", "1"], g=3)
    # equivalence-aware matching: 0.50 == 0.5; by exact string (the paper's rule) it is not
    assert co_rewarding_i_reward()(**kw) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert co_rewarding_i_reward(exact_vote=True)(**kw) == [0.0] * 6

    # lenient extraction reads "the answer is 3" without a box; the paper's boxed rule does not
    texts = ["The answer is 3", "The answer is 3", "\\boxed{4}"]
    kw = {"prompts": ["q"] * 3, "completions": texts, "completion_ids": [[1]] * 3}
    assert majority_vote_reward()(**kw) == [1.0, 1.0, 0.0]
    assert majority_vote_reward(extraction="boxed")(**kw) == [0.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="extraction"):
        majority_vote_reward(extraction="loose")


# ------------------------------------------------------------------------------------- end to end


def _grpo_args(tmp_path: Path, **overrides) -> GRPOConfig:
    """A CPU-friendly GRPOConfig, after benchmarks/trl_step_time.py: fp32 on CPU, torch AdamW, no
    checkpointing, no logging integrations, one optimizer step per generation batch."""
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    )
    settings = {
        "output_dir": str(tmp_path / "trl"),
        "max_steps": 2,
        "seed": 0,
        "per_device_train_batch_size": 16,
        "num_generations": G,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 48,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "optim": "adamw_torch",
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        checkpointing: False,
        "model_init_kwargs": {"dtype": "float32"},
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    settings.update(overrides)
    return GRPOConfig(**settings)


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _recording(reward_func, calls: list[dict]):
    """``reward_func`` with every call's arguments and result kept (same name for TRL's logs)."""

    def record(prompts, completions, completion_ids, **kwargs):
        out = reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        calls.append({"completions": completions, "completion_ids": completion_ids, **kwargs, "rewards": out})
        return out

    record.__name__ = reward_func.__name__
    return record


def _groups(call: dict, num_generations: int) -> list[RolloutGroup]:
    """The call's completions as corewarding's RolloutGroups: TRL's blocks of num_generations in a row."""
    groups = []
    for s in range(0, len(call["completions"]), num_generations):
        pair_id, view = call["pair_id"][s], call["view"][s]
        assert call["pair_id"][s : s + num_generations] == [pair_id] * num_generations
        assert call["view"][s : s + num_generations] == [view] * num_generations
        rollouts = [
            Rollout(prompt_ids=[], response_ids=list(call["completion_ids"][i]), text=c[-1]["content"])
            for i, c in enumerate(call["completions"][s : s + num_generations], start=s)
        ]
        question = Question(id=f"{pair_id}-{view}", question="", messages=[])
        groups.append(RolloutGroup(question=question, view=view, pair_id=pair_id, rollouts=rollouts))
    return groups


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _changed(before: dict[str, torch.Tensor], model) -> bool:
    return any(not torch.equal(before[k], v.detach()) for k, v in model.named_parameters())


@pytest.mark.slow
def test_trl_trains_with_co_rewarding_i(tmp_path):
    originals, rephrased = _pairs(4)
    calls: list[dict] = []
    _reset_accelerate()
    torch.manual_seed(0)

    # --- what a TRL user writes (README), with the recording wrapper around the reward function
    train = pair_dataset(originals, rephrased)  # columns prompt, pair_id, view
    args = _grpo_args(tmp_path)  # 16 completions per step = 2 pairs x 2 views x G=4
    trainer = CoRewardingGRPOTrainer(
        model=str(SHIPPED_DIR),
        reward_funcs=_recording(co_rewarding_i_reward(extraction="boxed"), calls),
        args=args,
        train_dataset=train,
    )
    before = _params(trainer.model)
    trainer.train()
    # ---

    assert _changed(before, trainer.model), "two GRPO steps left the weights unchanged"
    assert len(calls) == 2
    seen = []
    method = get_reward_method("co_rewarding_i", extraction="boxed")
    for call in calls:
        assert len(call["completions"]) == 16
        views = {}
        for pid, view in zip(call["pair_id"], call["view"], strict=True):
            views.setdefault(pid, set()).add(view)
        assert all(v == {"original", "rephrased"} for v in views.values()), views
        assert len(views) == 2
        seen += list(views)
        assert set(call["rewards"]) <= {0.0, 1.0}
        direct = score_step(method, _groups(call, G))
        assert call["rewards"] == [r for row in direct.rewards for r in row]
    assert sorted(seen) == sorted(q.extra["pair_id"] for q in originals)  # 4 pairs, 2 per step, no repeats
    logged = [
        h["rewards/co_rewarding_i/mean"]
        for h in trainer.state.log_history
        if "rewards/co_rewarding_i/mean" in h
    ]
    assert logged == pytest.approx([sum(c["rewards"]) / len(c["rewards"]) for c in calls])
    assert any("co_rewarding_i/co_rewarding/view_agreement" in h for h in trainer.state.log_history)
    # evaluation keeps pairs together too, for eval sets laid out in pairs; others get TRL's own sampler
    assert type(trainer._get_eval_sampler(train)) is PairRepeatSampler
    assert type(trainer._get_eval_sampler(train.remove_columns(["pair_id"]))) is RepeatSampler


@pytest.mark.slow
def test_trl_trains_with_majority_vote(tmp_path):
    originals, _ = _pairs(4)
    calls: list[dict] = []
    _reset_accelerate()
    torch.manual_seed(0)
    train = [{"prompt": q.messages, "pair_id": q.extra["pair_id"], "view": "original"} for q in originals]
    args = _grpo_args(tmp_path, per_device_train_batch_size=8)  # 2 questions x G=4 per step
    trainer = GRPOTrainer(
        model=str(SHIPPED_DIR),
        reward_funcs=_recording(majority_vote_reward(num_generations=G), calls),
        args=args,
        train_dataset=Dataset.from_list(train),
    )
    before = _params(trainer.model)
    trainer.train()

    assert _changed(before, trainer.model), "two GRPO steps left the weights unchanged"
    assert len(calls) == 2
    method = get_reward_method("majority_vote")
    for call in calls:
        assert len(call["completions"]) == 8
        assert set(call["rewards"]) <= {0.0, 1.0}
        direct = score_step(method, _groups(call, G))
        assert call["rewards"] == [r for row in direct.rewards for r in row]
