"""Every shipped training config loads, and the paper / improved folders say what they promise.

configs/paper/ reproduces the Co-rewarding paper's released code (reward rules and budgets) on MATH,
DAPO-14k (dapo/) and OpenRS (openrs/); configs/improved/ mirrors it file for file with the project's own
reward rules and nothing else changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corewarding.config import GT_GRADERS, Config, load_config
from corewarding.data.paths import resolve_data_path
from corewarding.errors import ConfigError
from corewarding.rewards.matching import GT_GRADERS as REWARD_GT_GRADERS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PAPER_FILES = sorted(p for p in (CONFIGS / "paper").rglob("*.yaml") if not p.name.endswith("-base.yaml"))
IMPROVED_FILES = sorted((CONFIGS / "improved").rglob("*.yaml"))
TRAINING_FILES = [*PAPER_FILES, *IMPROVED_FILES, CONFIGS / "tiny-cpu.yaml", CONFIGS / "gpu-smoke.yaml"]
PAPER_REWARD = {"extraction": "boxed", "exact_vote": True, "gt_grader": "string"}
IMPROVED_REWARD = {"extraction": "lenient", "exact_vote": False, "gt_grader": "math_verify"}
METHOD_FILES = {
    "co_rewarding_i",
    "co_rewarding_ii",
    "co_rewarding_ii_frozen",
    "entropy",
    "gt",
    "majority_vote",
    "majority_vote_rephrased",
    "self_certainty",
}
# training-set folder in configs/paper -> folder of the shared data
DATASETS = {"": "math", "dapo": "dapo", "openrs": "open-rs"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def dataset_of(path: Path, top: str) -> str:
    parent = path.parent.relative_to(CONFIGS / top)
    return str(parent) if str(parent) != "." else ""


def test_every_method_on_every_training_set_in_both_folders():
    for top, files in (("paper", PAPER_FILES), ("improved", IMPROVED_FILES)):
        for folder in DATASETS:
            have = {p.stem for p in files if dataset_of(p, top) == folder}
            assert have == METHOD_FILES, (top, folder)


@pytest.mark.parametrize("path", TRAINING_FILES, ids=rel)
def test_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("path", PAPER_FILES, ids=rel)
def test_paper_configs_use_the_papers_rules_and_budgets(path, shared_data):
    cfg = load_config(path)
    assert dataclasses.asdict(cfg.reward) == PAPER_REWARD
    folder = DATASETS[dataset_of(path, "paper")]
    assert cfg.data.train == f"shared:train/{folder}/train_original.parquet"
    assert cfg.data.train_rephrased == f"shared:train/{folder}/train_rewrite_Qwen3-32B.parquet"
    assert cfg.data.val == "shared:train/math/test.parquet"
    for p in (cfg.data.train, cfg.data.train_rephrased, cfg.data.val):
        assert resolve_data_path(p).is_file(), p
    # 3 epochs at 128 questions a step, the last partial batch dropped (verl), for every method
    rows = pq.read_metadata(resolve_data_path(cfg.data.train)).num_rows
    assert cfg.trainer.batch_questions == 128
    assert cfg.trainer.total_steps == 3 * (rows // 128) == {"math": 174, "dapo": 330, "open-rs": 162}[folder]
    assert (cfg.rollout.n, cfg.rollout.max_new_tokens, cfg.data.max_prompt_length) == (8, 3072, 512)
    assert cfg.rollout.batch_size == 48  # chosen with `corewarding plan` for memory (see math-base.yaml)
    assert (cfg.optim.lr, cfg.optim.warmup_ratio, cfg.optim.schedule) == (3e-6, 0.1, "cosine")
    if cfg.method == "co_rewarding_ii":
        assert (cfg.grpo.kl_coef, cfg.teacher.a_start, cfg.teacher.a_end) == (0.001, 0.01, 1e-4)
        assert (cfg.teacher.n, cfg.teacher.update_interval) == (8, 1)
        assert cfg.teacher.ema is (path.stem != "co_rewarding_ii_frozen")
    else:
        assert cfg.grpo.kl_coef == 0.005


@pytest.mark.parametrize("path", IMPROVED_FILES, ids=rel)
def test_improved_configs_change_only_the_reward_rules(path):
    twin = CONFIGS / "paper" / path.relative_to(CONFIGS / "improved")
    improved, paper = load_config(path), load_config(twin)
    assert (
        dataclasses.asdict(improved.reward) == IMPROVED_REWARD == dataclasses.asdict(type(improved.reward)())
    )
    assert improved.trainer.run_name == f"{paper.trainer.run_name or paper.method}-improved"
    same = dataclasses.replace(
        improved,
        reward=paper.reward,
        trainer=dataclasses.replace(improved.trainer, run_name=paper.trainer.run_name),
    )
    assert same == paper


def test_run_names_do_not_collide():
    dirs = [load_config(p).run_dir for p in [*PAPER_FILES, *IMPROVED_FILES]]
    assert len(set(dirs)) == len(dirs)


def test_reward_options_are_validated():
    tiny = CONFIGS / "tiny-cpu.yaml"
    with pytest.raises(ConfigError, match=r"reward.extraction='strict': expected lenient or boxed"):
        load_config(tiny, ["reward.extraction=strict"])
    with pytest.raises(ConfigError, match=r"reward.gt_grader='exact': expected math_verify or string"):
        load_config(tiny, ["reward.gt_grader=exact"])
    with pytest.raises(ConfigError, match=r"reward\.exact_vote"):
        load_config(tiny, ["reward.exact_vote=maybe"])
    assert GT_GRADERS == REWARD_GT_GRADERS


def test_paper_mode_by_overrides_equals_the_paper_files():
    """The override list that turns the improved rules into the paper's (e.g. for the micro-world)."""
    overrides = ["reward.extraction=boxed", "reward.exact_vote=true", "reward.gt_grader=string"]
    cfg = load_config(CONFIGS / "improved" / "co_rewarding_i.yaml", overrides)
    assert cfg.reward == load_config(CONFIGS / "paper" / "co_rewarding_i.yaml").reward
    short = load_config(
        CONFIGS / "tiny-cpu.yaml", ["extraction=boxed", "exact_vote=true", "gt_grader=string"]
    )
    assert dataclasses.asdict(short.reward) == PAPER_REWARD
