"""Base-model pretraining: a short real run gives a loadable Hugging Face directory, cached and seeded."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from corewarding.answers import extract_answer
from corewarding.microworld import base_model
from corewarding.microworld.base_model import (
    LOG_FILE,
    PretrainConfig,
    get_base_model,
    model_fingerprint,
    pretrain_base_model,
    pretraining_examples,
)
from corewarding.microworld.world import WorldConfig, build_world

WORLD = WorldConfig(seed=1, n_train=40, n_val=10, n_test=10)
TINY = PretrainConfig(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    steps=40,
    batch_size=8,
    lr=3e-3,
    warmup_steps=5,
    n_problems=300,
)


@pytest.fixture(scope="module")
def world():
    return build_world(config=WORLD)


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory):
    return pretrain_base_model(world, tmp_path_factory.mktemp("base") / "model", TINY, seed=0, progress=False)


def test_short_pretraining_gives_a_loadable_model_whose_loss_went_down(pretrained, world):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log = json.loads((pretrained / LOG_FILE).read_text())
    losses = log["losses"]
    assert len(losses) == TINY.steps
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert log["parameters"] > 0 and log["seconds"] > 0
    assert not list(pretrained.parent.glob("*.tmp*"))  # written whole, no temporary left behind

    model = AutoModelForCausalLM.from_pretrained(pretrained)
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(
        world.test[0].messages, add_generation_prompt=True, return_tensors="pt"
    )
    torch.manual_seed(0)
    out = model.generate(**prompt, do_sample=True, temperature=1.0, max_new_tokens=8, num_return_sequences=2)
    assert out.shape[0] == 2 and out.shape[1] > prompt["input_ids"].shape[1]


def test_pretraining_is_deterministic_for_a_seed(pretrained, world, tmp_path):
    shorter = replace(TINY, steps=6)
    a = pretrain_base_model(world, tmp_path / "a", shorter, seed=0, progress=False)
    b = pretrain_base_model(world, tmp_path / "b", shorter, seed=0, progress=False)
    c = pretrain_base_model(world, tmp_path / "c", shorter, seed=1, progress=False)

    def losses(path):
        return json.loads((path / LOG_FILE).read_text())["losses"]

    assert losses(a) == losses(b)
    assert losses(a) != losses(c)
    assert losses(a)[:6] == json.loads((pretrained / LOG_FILE).read_text())["losses"][:6]


def test_pretraining_data_is_disjoint_from_the_world_and_partly_corrupted(world):
    config = replace(TINY, n_problems=600, corrupt_fraction=0.3, nobox_fraction=0.1)
    examples = pretraining_examples(world, config, seed=0)
    assert len(examples) == 600
    world_texts = {t for problems in world.problems.values() for p in problems for t in p.views}
    assert not world_texts & {messages[-1]["content"] for messages, _ in examples}
    answers = [extract_answer(target) for _, target in examples]
    nobox = sum(a is None for a in answers) / len(answers)
    assert 0.05 < nobox < 0.16
    assert all(messages[0]["content"] == world.config.system_prompt for messages, _ in examples)
    # the same seed gives the same data, a wrong-answer share near corrupt_fraction is checked by problems tests
    assert pretraining_examples(world, config, seed=0) == examples


def test_get_base_model_caches_by_fingerprint(world, tmp_path, monkeypatch):
    calls = []
    real = base_model.pretrain_base_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(base_model, "pretrain_base_model", counting)
    config = replace(TINY, steps=3)
    first = get_base_model(cache_dir=tmp_path, seed=0, world_config=WORLD, config=config, progress=False)
    again = get_base_model(cache_dir=tmp_path, seed=0, world_config=WORLD, config=config, progress=False)
    assert first == again and len(calls) == 1
    assert first.parent == tmp_path and first.name == model_fingerprint(world, config, 0)
    other = get_base_model(cache_dir=tmp_path, seed=1, world_config=WORLD, config=config, progress=False)
    assert other != first and len(calls) == 2
    assert (other / "config.json").is_file() and (other / "tokenizer.json").is_file()


def test_fingerprint_changes_with_the_world_and_the_recipe(world):
    base = model_fingerprint(world, TINY, 0)
    assert model_fingerprint(world, TINY, 0) == base
    assert model_fingerprint(world, replace(TINY, steps=41), 0) != base
    assert model_fingerprint(build_world(config=replace(WORLD, seed=2)), TINY, 0) != base


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        PretrainConfig(corrupt_fraction=0.8, nobox_fraction=0.3)
    with pytest.raises(ValueError, match="num_heads"):
        PretrainConfig(hidden_size=100, num_heads=3)


def test_the_shipped_base_was_built_for_the_current_world_and_recipe():
    """A change to the world, its tokenizer or the recipe must come with ``corewarding build-base``."""
    default = model_fingerprint(build_world(config=WorldConfig()), PretrainConfig(), 0)
    assert base_model.shipped_fingerprint() == default, (
        "src/corewarding/microworld/shipped_base/ was built for another world or recipe: run "
        "`corewarding build-base` (make base) and commit it"
    )
    assert get_base_model(cache_dir="/nonexistent-never-written") == base_model.SHIPPED_DIR
    log = json.loads((base_model.SHIPPED_DIR / LOG_FILE).read_text())
    assert log["pretrain"]["steps"] == PretrainConfig().steps and log["seed"] == 0
    assert len(log["losses"]) == PretrainConfig().steps and log["machine"]["cpus"] >= 1


def test_the_shipped_base_answers_like_a_pretrained_model():
    """Loaded the way users load it, the shipped base solves held-out problems some of the time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corewarding.data.question import Question

    world = build_world(config=WorldConfig())
    model = AutoModelForCausalLM.from_pretrained(base_model.SHIPPED_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model.SHIPPED_DIR)
    problems = world.problems["test"][:16]
    prompts = [
        tokenizer.apply_chat_template(
            Question.from_text("t", p.views[0], system_prompt=world.config.system_prompt).messages,
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in problems
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=64)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    correct = sum(extract_answer(t) == str(p.answer) for t, p in zip(texts, problems, strict=True))
    assert correct >= 4, texts[:3]


def test_a_run_that_refuses_the_shipped_base_pretrains_into_the_cache(world, tmp_path):
    config = replace(TINY, steps=2)
    path = get_base_model(
        cache_dir=tmp_path, seed=0, world_config=WORLD, config=config, progress=False, use_shipped=False
    )
    assert path.parent == tmp_path
    log = json.loads((path / LOG_FILE).read_text())
    assert log["fingerprint"] == path.name and log["machine"]["torch_threads"] >= 1
