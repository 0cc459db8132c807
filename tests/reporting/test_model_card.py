"""The model card written into every exported checkpoint: metadata, method, data, the hyperparameters the run
used, its validation figures and a loading snippet that runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from corewarding.config import load_config
from corewarding.reporting.model_card import (
    PAPER_URL,
    build_model_card,
    hub_id,
    logged_validation,
    write_model_card,
)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n", 2)[1])


def table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the markdown table under ``## heading``."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]  # past the header


def python_block(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


# ---------------------------------------------------------------- a real checkpoint


@pytest.mark.slow
def test_checkpoint_card_metadata(trained_run):
    from huggingface_hub import ModelCard

    path = trained_run.checkpoint / "README.md"
    meta = front_matter(path.read_text())
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert {
        "co-rewarding",
        "grpo",
        "reinforcement-learning",
        "math",
        "self-supervised",
        "co-rewarding-ii",
    } <= set(meta["tags"])
    # builtin:tiny-qwen3 and shared: parquet files are local: named in the body, never in the metadata
    assert "base_model" not in meta and "datasets" not in meta and "license" not in meta
    card = ModelCard.load(path)  # huggingface_hub reads it back
    assert card.data.pipeline_tag == "text-generation"
    # the export beside it still loads as a model: the card is an extra file
    assert (trained_run.checkpoint / "config.json").is_file()


@pytest.mark.slow
def test_checkpoint_card_body_says_method_data_and_paper(trained_run):
    text = (trained_run.checkpoint / "README.md").read_text()
    cfg = trained_run.cfg
    assert "# tiny-qwen3 trained with Co-rewarding-II" in text
    assert PAPER_URL in text and "Co-rewarding: Stable Self-supervised RL" in text
    assert "**Co-rewarding-II** (model side)" in text and "EMA of the policy" in text
    assert "`builtin:tiny-qwen3`" in text
    assert f"`{cfg.data.train}` (a local file), its first {cfg.data.limit} rows" in text
    assert f"`{cfg.data.val}` (a local file), its first {cfg.data.val_limit} questions" in text
    # Co-rewarding-II does not read the rephrasings: the card says so rather than listing them as used
    assert "were configured, but this method does not use them" in text
    assert "`teacher/` holds the Co-rewarding-II teacher" in text
    assert (trained_run.checkpoint / "teacher" / "config.json").is_file()


@pytest.mark.slow
def test_checkpoint_card_hyperparameters_equal_the_run_config(trained_run):
    text = (trained_run.checkpoint / "README.md").read_text()
    saved = load_config(trained_run.run_dir / "config.yaml")  # the resolved config the run wrote
    rows = {key.strip("`"): value for _, value, key in table(text, "Hyperparameters") if key}
    expected = {
        "trainer.total_steps": f"2 of {saved.trainer.total_steps}",
        "trainer.batch_questions": str(saved.trainer.batch_questions),
        "rollout.n": str(saved.rollout.n),
        "optim.lr": f"{saved.optim.lr:g}",
        "grpo.kl_coef": f"{saved.grpo.kl_coef:g}",
        "grpo.clip_ratio": f"{saved.grpo.clip_ratio:g}",
        "rollout.temperature": f"{saved.rollout.temperature:g}",
        "data.max_prompt_length": str(saved.data.max_prompt_length),
        "rollout.max_new_tokens": str(saved.rollout.max_new_tokens),
        "teacher.n": str(saved.teacher.n),
        "teacher.ema": "true",
        "teacher.a_*": f"{saved.teacher.a_start:g} → {saved.teacher.a_end:g}",
        "teacher.update_interval": str(saved.teacher.update_interval),
        "reward.extraction": saved.reward.extraction,
        "reward.exact_vote": "false",
        "trainer.seed": str(saved.trainer.seed),
    }
    for key, value in expected.items():
        assert rows.get(key) == value, (key, rows.get(key), value)
    # and the values the tiny config file sets
    assert (
        rows["optim.lr"] == "0.0001" and rows["rollout.n"] == "4" and rows["rollout.max_new_tokens"] == "24"
    )
    assert "reward.gt_grader" not in rows  # co_rewarding_ii does not take it


@pytest.mark.slow
def test_checkpoint_card_validation_figures_are_the_runs_latest(trained_run):
    text = (trained_run.checkpoint / "README.md").read_text()
    rows = [json.loads(line) for line in (trained_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    last = next(r for r in reversed(rows) if any(k.startswith("val/") for k in r))
    assert last["step"] == 2
    assert "Latest validation, at step 2: 2 samples per question at temperature 0.8" in text
    figures = dict(table(text, "Validation"))
    assert figures["avg@2"] == f"{last['val/avg@2']:.4f}"
    assert figures["maj@2"] == f"{last['val/maj@2']:.4f}"
    assert figures["pass@2"] == f"{last['val/pass@2']:.4f}"
    assert figures["questions"] == "4"


@pytest.mark.slow
def test_checkpoint_card_snippet_loads_and_prompts_the_export(trained_run):
    from corewarding.data import load_questions
    from corewarding.data.paths import resolve_data_path

    text = (trained_run.checkpoint / "README.md").read_text()
    code = python_block(text)
    # the run's system prompt: the one the training data's chats carry
    system = next(
        m["content"]
        for m in load_questions(resolve_data_path(trained_run.cfg.data.train), limit=1)[0].messages
        if m["role"] == "system"
    )
    assert json.dumps(system) in code and "apply_chat_template" in code
    assert 'model_id = "my-org/tiny-co-rewarding-ii"' in code  # trainer.hub_repo_id
    assert "corewarding eval --model my-org/tiny-co-rewarding-ii" in text
    local = re.sub(
        r'^model_id = ".*?"', f"model_id = {json.dumps(str(trained_run.checkpoint))}", code, flags=re.M
    )
    scope: dict = {}
    exec(compile(local, "model-card-snippet", "exec"), scope)  # the card's own snippet
    assert scope["output"].shape[1] > scope["inputs"]["input_ids"].shape[1]


# ---------------------------------------------------------------- metadata rules, without training


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_ids_go_into_metadata_and_local_files_into_the_body(empty_hub_cache):
    cfg = load_config(
        "configs/tiny-cpu.yaml",
        [
            "model.name_or_path=Qwen/Qwen3-4B-Base",
            "data.train=my-org/math-train",
            "data.train_rephrased=/data/math-rephrased.parquet",
        ],
    )
    card = build_model_card(cfg, 7)
    meta = front_matter(str(card))
    assert meta["base_model"] == "Qwen/Qwen3-4B-Base"
    assert meta["datasets"] == ["my-org/math-train"]
    assert "license" not in meta  # the base model's card is not on this machine
    assert "co-rewarding-i" in meta["tags"]
    assert "[Qwen/Qwen3-4B-Base](https://huggingface.co/Qwen/Qwen3-4B-Base)" in card.text
    assert "[my-org/math-train](https://huggingface.co/datasets/my-org/math-train)" in card.text
    assert "Rephrasings: `/data/math-rephrased.parquet` (a local file), row-aligned" in card.text
    assert "the second view of Co-rewarding-I" in card.text
    assert "| training steps done | 7 of 2 |" in card.text
    assert "No validation ran before this checkpoint." in card.text


def test_license_comes_from_the_cached_base_model_card(empty_hub_cache):
    snapshot = empty_hub_cache / "models--Qwen--Qwen3-4B-Base" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Qwen3-4B-Base\n")
    (empty_hub_cache / "models--Qwen--Qwen3-4B-Base" / "refs").mkdir()
    (empty_hub_cache / "models--Qwen--Qwen3-4B-Base" / "refs" / "main").write_text("abc")
    cfg = load_config("configs/tiny-cpu.yaml", ["model.name_or_path=Qwen/Qwen3-4B-Base"])
    assert front_matter(str(build_model_card(cfg, 1)))["license"] == "apache-2.0"


def test_local_base_model_card_gives_license_and_upstream_base(tmp_path):
    base = tmp_path / "my-base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: mit\nbase_model: Qwen/Qwen3-8B-Base\n---\n# mine\n")
    cfg = load_config("configs/tiny-cpu.yaml", [f"model.name_or_path={base}", "method=gt"])
    card = build_model_card(cfg, 3)
    meta = front_matter(str(card))
    assert meta["license"] == "mit" and meta["base_model"] == "Qwen/Qwen3-8B-Base"
    assert "self-supervised" not in meta["tags"] and "gt" in meta["tags"]
    assert f"the local model `{base}`" in card.text and "ground-truth baseline" in card.text
    assert "| reward: gt_grader | math_verify | `reward.gt_grader` |" in card.text


def test_paper_reward_mode_options_are_listed():
    cfg = load_config(
        "configs/tiny-cpu.yaml",
        ["method=majority_vote", "reward.extraction=boxed", "reward.exact_vote=true", "data.view=rephrased"],
    )
    text = build_model_card(cfg, 2).text
    assert "| reward: extraction | boxed | `reward.extraction` |" in text
    assert "| reward: exact_vote | true | `reward.exact_vote` |" in text
    assert "on the rephrased questions (an ablation of the paper)" in text
    assert "the questions this run trained on" in text


def test_snippet_without_chat_template_joins_the_messages():
    cfg = load_config("configs/tiny-cpu.yaml", ["method=entropy"])
    code = python_block(build_model_card(cfg, 1, chat_template=False, repo_id="org/m").text)
    assert 'model_id = "org/m"' in code
    assert "apply_chat_template" not in code
    assert json.dumps(cfg.data.system_prompt) + ' + "\\n\\n" + ' in code


def test_hub_id_rules(tmp_path, monkeypatch):
    assert hub_id("Qwen/Qwen3-8B-Base") == "Qwen/Qwen3-8B-Base"
    assert hub_id("gpt2") == "gpt2"
    for local in (
        "builtin:tiny-qwen3",
        "shared:train/math/train_original.parquet",
        "/data/x",
        "./x",
        "a/b/c",
    ):
        assert hub_id(local) is None, local
    assert hub_id("train.parquet") is None
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_id("org/name") is None  # an existing local folder wins


def test_resumed_run_card_reads_validation_from_the_log(tmp_path):
    cfg = load_config("configs/tiny-cpu.yaml", [f"output_dir={tmp_path}", "trainer.run_name=r"])
    run = Path(cfg.run_dir)
    run.mkdir(parents=True)
    rows = [
        {"step": 0, "val/avg@2": 0.1},
        {"step": 2, "reward/mean": 0.3, "val/avg@2": 0.25, "val/maj@2": 0.5},
        {"step": 3, "reward/mean": 0.4},
        {"step": 4, "val/avg@2": 0.9},  # after the checkpoint's step: not its figures
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert logged_validation(run / "metrics.jsonl", 3) == (2, {"val/avg@2": 0.25, "val/maj@2": 0.5})
    export = tmp_path / "export"
    export.mkdir()
    text = write_model_card(export, cfg, 3).read_text()
    assert "Latest validation, at step 2" in text and "| avg@2 | 0.2500 |" in text


def test_lora_run_card_lists_the_adapter_and_loads_an_adapter_only_export(empty_hub_cache):
    cfg = load_config(
        "configs/tiny-cpu.yaml",
        ["model.name_or_path=Qwen/Qwen3-4B-Base", "model.lora.r=8", "model.lora.merge_on_export=false"],
    )
    card = build_model_card(cfg, 2, adapter=True)
    assert front_matter(str(card))["library_name"] == "peft"
    assert "| LoRA rank / alpha / dropout | 8 / 16 / 0 | `model.lora.*` |" in card.text
    assert "| LoRA export | the adapter alone (adapter/) |" in card.text
    code = python_block(card.text)
    assert 'AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-4B-Base"' in code
    assert 'PeftModel.from_pretrained(base, model_id, subfolder="adapter")' in code
