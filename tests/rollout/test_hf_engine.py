"""The transformers rollout engine on a tiny real Qwen3 model built from a config (no downloads)."""

from __future__ import annotations

import pytest
import torch

from corewarding.data import SYSTEM_PROMPT, Question, load_questions, prompt_token_ids
from corewarding.models.loading import load_model_and_tokenizer, resolve_dtype
from corewarding.models.tiny import build_tiny_model
from corewarding.rollout.engine import RolloutEngine
from corewarding.rollout.hf_engine import HFRolloutEngine
from corewarding.rollout.types import SamplingParams


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    texts = [q.question for q in load_questions(shared_data / "benchmarks" / "math500.jsonl")]
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), [*texts, SYSTEM_PROMPT], vocab_size=512)
    model, tokenizer = load_model_and_tokenizer(str(path), device="cpu")
    return path, model, tokenizer


@pytest.fixture(scope="module")
def prompts(shared_data):
    qs = load_questions(shared_data / "benchmarks" / "gsm8k_test.jsonl", limit=2)
    qs.append(Question.from_text("short", "What is $1+1$?"))
    return [q.messages for q in qs]


def _engine(tiny, **kwargs) -> HFRolloutEngine:
    return HFRolloutEngine(tiny[1], tiny[2], **kwargs)


def test_grouped_by_prompt_with_n_each(tiny, prompts):
    engine = _engine(tiny, batch_size=64)
    assert isinstance(engine, RolloutEngine)
    out = engine.generate(prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    assert len(out) == 3 * 4
    expected_ids = prompt_token_ids(tiny[2], prompts)
    for j, r in enumerate(out):
        assert r.prompt_index == j // 4
        assert r.prompt_ids == expected_ids[j // 4]
        assert 1 <= r.num_response_tokens <= 12
        assert r.truncated == (r.response_ids[-1] not in engine.eos_token_ids)
        assert r.text == tiny[2].decode(r.response_ids, skip_special_tokens=True)
    # the chat template (ChatML with the system prompt) is what the model sees
    rendered = tiny[2].decode(out[0].prompt_ids)
    assert rendered.startswith("<|im_start|>system\n" + SYSTEM_PROMPT) and rendered.endswith(
        "<|im_start|>assistant\n"
    )


def test_max_new_tokens_is_respected(tiny, prompts):
    out = _engine(tiny).generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=5, seed=1))
    assert all(r.num_response_tokens <= 5 for r in out)
    assert all(r.num_response_tokens == 5 for r in out if r.truncated)


def test_stops_at_eos_and_keeps_it(tiny, prompts):
    """A token the greedy continuation produces is declared an EOS: generation must stop right after it."""
    _, model, tokenizer = tiny
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    free = _engine(tiny).generate(prompts[:1], 1, greedy)[0]
    assert free.truncated and free.num_response_tokens == 10
    stop = free.response_ids[3]
    first = free.response_ids.index(stop)
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    try:
        engine = _engine(tiny)
        assert stop in engine.eos_token_ids
        r = engine.generate(prompts[:1], 1, greedy)[0]
    finally:
        model.generation_config.eos_token_id = original
    assert not r.truncated
    assert r.response_ids == free.response_ids[: first + 1]  # EOS kept, nothing after it


def test_seeded_sampling_is_deterministic(tiny, prompts):
    engine = _engine(tiny, batch_size=5)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=123)
    a = engine.generate(prompts, 3, params)
    b = engine.generate(prompts, 3, params)
    c = engine.generate(prompts, 3, SamplingParams(temperature=1.0, max_new_tokens=10, seed=124))
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.response_ids for r in a] != [r.response_ids for r in c]
    assert len({tuple(r.response_ids) for r in a}) > 1  # samples of one call differ from each other


def test_small_batches_give_the_same_grouping_and_greedy_text(tiny, prompts):
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    big = _engine(tiny, batch_size=64).generate(prompts, 2, greedy)
    small = _engine(tiny, batch_size=1).generate(prompts, 2, greedy)
    odd = _engine(tiny, batch_size=4).generate(prompts, 2, greedy)
    # left padding, masks and positions are right: a prompt's greedy answer does not depend on its batch
    for runs in (small, odd):
        assert [(r.prompt_index, r.prompt_ids, r.response_ids) for r in runs] == [
            (r.prompt_index, r.prompt_ids, r.response_ids) for r in big
        ]


def test_checkpoint_generation_defaults_do_not_leak(tiny, prompts):
    """A checkpoint's generation_config (Qwen ships top_k=20 etc.) must not change the requested sampling."""
    model = tiny[1]
    saved = (model.generation_config.top_k, model.generation_config.repetition_penalty)
    model.generation_config.top_k = 1  # would make every sample the greedy one
    model.generation_config.repetition_penalty = 5.0
    try:
        out = _engine(tiny).generate(
            prompts[:1], 6, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0)
        )
        greedy = _engine(tiny).generate(prompts[:1], 1, SamplingParams(temperature=0.0, max_new_tokens=8))
    finally:
        model.generation_config.top_k, model.generation_config.repetition_penalty = saved
    assert len({tuple(r.response_ids) for r in out}) > 1
    reference = _engine(tiny).generate(prompts[:1], 1, SamplingParams(temperature=0.0, max_new_tokens=8))
    assert greedy[0].response_ids == reference[0].response_ids  # no repetition penalty applied


def test_training_mode_and_cache_setting_are_restored(tiny, prompts):
    model = tiny[1]
    model.train()
    model.config.use_cache = False
    try:
        _engine(tiny).generate(prompts[:1], 1, SamplingParams(max_new_tokens=3, seed=0))
        assert model.training and model.config.use_cache is False
        model.eval()
        _engine(tiny).generate(prompts[:1], 1, SamplingParams(max_new_tokens=3, seed=0))
        assert not model.training
    finally:
        model.eval()
        model.config.use_cache = True
    assert not any(p.requires_grad and p.grad is not None for p in model.parameters())


def test_prompt_truncation_keeps_the_end(tiny, prompts):
    engine = _engine(tiny, max_prompt_length=10)
    out = engine.generate(prompts[:1], 1, SamplingParams(max_new_tokens=2, seed=0))
    assert out[0].prompt_ids == prompt_token_ids(tiny[2], prompts[:1])[0][-10:]


def test_from_pretrained_and_sync_weights(tiny, prompts):
    path, model, _ = tiny
    engine = HFRolloutEngine.from_pretrained(str(path), device="cpu", dtype="fp32", batch_size=3)
    assert engine.batch_size == 3 and next(engine.model.parameters()).dtype == torch.float32
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
    assert (
        engine.generate(prompts, 1, greedy)[0].response_ids
        == _engine(tiny).generate(prompts, 1, greedy)[0].response_ids
    )
    engine.sync_weights(model)
    assert engine.model is model
    assert resolve_dtype(None, "cpu") == torch.float32


def test_loading_errors_are_config_errors(tmp_path):
    from corewarding.errors import ConfigError

    for name in (str(tmp_path / "missing"), str(tmp_path)):  # no such folder; a folder without config.json
        with pytest.raises(ConfigError, match="could not be loaded"):
            load_model_and_tokenizer(name, device="cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        load_model_and_tokenizer(str(tmp_path), device="gpu0")
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("float8", "cpu")
    with pytest.raises(ConfigError, match="unknown built-in model 'builtin:nope'"):
        load_model_and_tokenizer("builtin:nope", device="cpu")


@pytest.mark.slow
def test_builtin_tiny_qwen3_is_built_once_and_cached(tmp_path, monkeypatch, shared_data):
    from corewarding.data import has_chat_template
    from corewarding.models.builtin import resolve_model_path

    monkeypatch.setenv("COREWARDING_CACHE", str(tmp_path))
    path = resolve_model_path("builtin:tiny-qwen3")
    assert path == str(tmp_path / "models" / "tiny-qwen3")
    stamp = (tmp_path / "models" / "tiny-qwen3" / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("builtin:tiny-qwen3") == path
    assert (tmp_path / "models" / "tiny-qwen3" / "model.safetensors").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-qwen3"]  # no temporary left
    engine = HFRolloutEngine.from_pretrained("builtin:tiny-qwen3", device="cpu")
    assert has_chat_template(engine.tokenizer) and engine.eos_token_ids == [engine.tokenizer.eos_token_id]
    out = engine.generate(
        [Question.from_text("q", "What is $1+1$?").messages], 2, SamplingParams(max_new_tokens=4)
    )
    assert [r.prompt_index for r in out] == [0, 0]
    assert resolve_model_path("/some/local/dir") == "/some/local/dir"  # other names pass through


def test_shared_prompt_prefill_samples_the_same_tokens(tiny, prompts, monkeypatch):
    """Each distinct prompt is prefilled once for its n rollouts; the sampled tokens must not change."""
    engine = _engine(tiny, batch_size=64)
    calls = []
    shared = engine._shared_prompt_cache

    def counting(input_ids, attention):
        cache = shared(input_ids, attention)
        calls.append(cache is not None)
        return cache

    sampling = SamplingParams(temperature=1.0, max_new_tokens=16, seed=3)
    monkeypatch.setattr(engine, "_shared_prompt_cache", counting)
    with_sharing = engine.generate(prompts, 4, sampling)
    assert calls and all(calls), "the shared prefill was not used"
    monkeypatch.setattr(engine, "_shared_prompt_cache", lambda *args: None)
    without = engine.generate(prompts, 4, sampling)
    assert [r.response_ids for r in with_sharing] == [r.response_ids for r in without]
    assert [r.truncated for r in with_sharing] == [r.truncated for r in without]
    # one rollout per prompt: nothing to share, generate prefills as usual
    assert shared(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.ones(2, 3, dtype=torch.long)) is None


@pytest.fixture(scope="module")
def microworld():
    """The shipped micro-world base: it answers and stops at EOS after unequal lengths, as a policy does."""
    from corewarding.microworld.base_model import SHIPPED_DIR
    from corewarding.microworld.world import WorldConfig, build_world

    model, tokenizer = load_model_and_tokenizer(str(SHIPPED_DIR), device="cpu")
    world = build_world(config=WorldConfig())
    return model, tokenizer, [q.messages for q in world.questions("val")[:12]]


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_compact_decoding_samples_what_generate_samples(microworld, temperature):
    """Dropping finished rows changes the work, not the rollouts: same tokens, EOS, truncation flags."""
    model, tokenizer, prompts = microworld
    sampling = SamplingParams(temperature=temperature, top_p=0.9, max_new_tokens=40, seed=5)
    compact = HFRolloutEngine(model, tokenizer, batch_size=96, decode="compact").generate(
        prompts, 8, sampling
    )
    plain = HFRolloutEngine(model, tokenizer, batch_size=96, decode="generate").generate(prompts, 8, sampling)
    assert [(r.response_ids, r.truncated) for r in compact] == [(r.response_ids, r.truncated) for r in plain]
    lengths = {len(r.response_ids) for r in compact}
    assert len(lengths) > 3, "responses of one length would not test dropping finished rows"
    assert any(not r.truncated and r.response_ids[-1] == tokenizer.eos_token_id for r in compact)


def test_compact_decoding_drops_finished_rows(microworld, monkeypatch):
    model, tokenizer, prompts = microworld
    engine = HFRolloutEngine(model, tokenizer, batch_size=96, decode="compact")
    rows_per_step: list[int] = []
    forward = model.forward

    def counting(*args, **kwargs):
        rows_per_step.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    out = engine.generate(prompts, 8, SamplingParams(temperature=1.0, max_new_tokens=64, seed=1))
    decode_steps = rows_per_step[1:]  # the first call is the shared prompt prefill
    assert decode_steps[0] == 96 and decode_steps == sorted(decode_steps, reverse=True)
    # every row is computed exactly as many times as it has tokens: no work on finished rows
    assert sum(decode_steps) == sum(len(r.response_ids) for r in out)
    assert engine._use_compact(None) is False
    with pytest.raises(ValueError, match="decode"):
        HFRolloutEngine(model, tokenizer, decode="fast")
