"""The vLLM engine's parts that run without a GPU: prompt encoding, output conversion, errors.

Generation itself needs vllm and a CUDA device; the test for it runs only where vllm is installed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from corewarding.data import SYSTEM_PROMPT, Question, load_questions
from corewarding.errors import ConfigError
from corewarding.rollout.hf_engine import HFRolloutEngine
from corewarding.rollout.types import SamplingParams
from corewarding.rollout.vllm_engine import VLLMRolloutEngine, _vllm_dtype, import_vllm, rollouts_from_outputs

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    from corewarding.models.loading import load_model_and_tokenizer
    from corewarding.models.tiny import build_tiny_model

    texts = [q.question for q in load_questions(shared_data / "benchmarks" / "math500.jsonl", limit=200)]
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), [*texts, SYSTEM_PROMPT], vocab_size=400)
    model, tokenizer = load_model_and_tokenizer(str(path), device="cpu")
    return path, model, tokenizer


def _completion(index, token_ids, text, finish_reason, stop_reason=None):
    """A record with the fields of ``vllm.outputs.CompletionOutput`` that the engine reads."""
    return SimpleNamespace(
        index=index, token_ids=token_ids, text=text, finish_reason=finish_reason, stop_reason=stop_reason
    )


def test_outputs_become_grouped_rollouts_with_one_trailing_eos():
    eos = [7, 9]
    outputs = [
        SimpleNamespace(
            outputs=[  # vLLM may list a request's completions in any order; index says which is which
                _completion(1, [4, 5, 9], "b", "stop", 9),  # stop id kept by vLLM
                _completion(0, [4, 5], "a", "stop", None),  # EOS left out of token_ids
            ]
        ),
        SimpleNamespace(
            outputs=[
                _completion(0, [1, 2, 3], "c", "length"),  # hit max_tokens
                _completion(1, [8, 7], "d", "stop", None),  # EOS present
            ]
        ),
    ]
    rollouts = rollouts_from_outputs(outputs, [[10, 11], [12]], 2, eos, default_eos=7)
    assert [(r.prompt_index, r.prompt_ids, r.response_ids, r.text, r.truncated) for r in rollouts] == [
        (0, [10, 11], [4, 5, 7], "a", False),
        (0, [10, 11], [4, 5, 9], "b", False),
        (1, [12], [1, 2, 3], "c", True),
        (1, [12], [8, 7], "d", False),
    ]


def test_output_counts_are_checked():
    one = SimpleNamespace(outputs=[_completion(0, [1], "x", "length")])
    with pytest.raises(RuntimeError, match="expected n=2"):
        rollouts_from_outputs([one], [[1]], 2, [0])
    with pytest.raises(RuntimeError, match="1 outputs for 2 prompts"):
        rollouts_from_outputs([one], [[1], [2]], 1, [0])


def test_prompts_are_encoded_exactly_like_the_transformers_engine(tiny):
    _, model, tokenizer = tiny
    prompts = [
        Question.from_text("a", "What is $1+1$?").messages,
        Question.from_text("b", "x" * 300).messages,
    ]
    hf = HFRolloutEngine(model, tokenizer, max_prompt_length=64)
    engine = VLLMRolloutEngine(None, tokenizer, max_prompt_length=64)
    assert engine.encode_prompts(prompts) == hf.encode_prompts(prompts)
    assert len(engine.encode_prompts(prompts)[1]) == 64
    assert engine.eos_token_ids == [tokenizer.eos_token_id]


def test_dtype_names():
    assert _vllm_dtype("bf16") == "bfloat16" and _vllm_dtype("auto") == "auto"
    import torch

    assert _vllm_dtype(torch.float16) == "float16"
    with pytest.raises(ConfigError, match="not supported by vllm"):
        _vllm_dtype("int8")


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed")
def test_missing_vllm_is_a_clear_config_error(tiny):
    with pytest.raises(ConfigError, match=r"needs the 'vllm' package.*--engine hf"):
        import_vllm()
    with pytest.raises(ConfigError, match="needs the 'vllm' package"):
        VLLMRolloutEngine.from_pretrained(str(tiny[0]))
    with pytest.raises(ConfigError, match="needs the 'vllm' package"):
        VLLMRolloutEngine(None, tiny[2]).sampling_params(2, SamplingParams())


@pytest.mark.skipif(not HAVE_VLLM, reason="needs vllm and a CUDA GPU")
def test_vllm_generates_grouped_rollouts_and_syncs_weights(tiny):  # pragma: no cover - GPU machines only
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    path, model, tokenizer = tiny
    engine = VLLMRolloutEngine.from_pretrained(str(path), dtype="float32", gpu_memory_utilization=0.3)
    prompts = [
        Question.from_text("a", "What is $1+1$?").messages,
        Question.from_text("b", "Find x.").messages,
    ]
    out = engine.generate(prompts, 3, SamplingParams(temperature=1.0, max_new_tokens=8))
    assert [r.prompt_index for r in out] == [0, 0, 0, 1, 1, 1]
    assert all(
        r.num_response_tokens <= 8 and r.truncated == (r.response_ids[-1] != tokenizer.eos_token_id)
        for r in out
    )
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    hf = HFRolloutEngine(model.to("cuda"), tokenizer).generate(prompts, 1, greedy)
    assert [r.response_ids for r in engine.generate(prompts, 1, greedy)] == [r.response_ids for r in hf]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    engine.sync_weights(model)
    hf = HFRolloutEngine(model, tokenizer).generate(prompts, 1, greedy)
    assert [r.response_ids for r in engine.generate(prompts, 1, greedy)] == [r.response_ids for r in hf]


class _LoadsWeights:
    """Receives weights the way vLLM's model classes do: ``load_weights(iterable of (name, tensor))``."""

    def __init__(self):
        self.loaded: dict[str, object] = {}

    def load_weights(self, weights):
        self.loaded.update(dict(weights))


@pytest.mark.parametrize("layout", ["v1_inproc", "v1_alias_wrapped", "v0"])
def test_sync_weights_reaches_the_in_process_model_and_drops_the_prefix_cache(tiny, layout):
    _, model, tokenizer = tiny
    target = _LoadsWeights()
    runner = SimpleNamespace(model_runner=SimpleNamespace(model=target))
    resets = []
    if layout == "v1_inproc":  # llm_engine.engine_core (InprocClient).engine_core (EngineCore)
        executor = SimpleNamespace(driver_worker=SimpleNamespace(worker=runner))
        engine = SimpleNamespace(
            engine_core=SimpleNamespace(engine_core=SimpleNamespace(model_executor=executor))
        )
    elif layout == "v1_alias_wrapped":
        engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=runner)))
    else:
        engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=runner))
    llm = SimpleNamespace(llm_engine=engine, reset_prefix_cache=lambda: resets.append(1))
    VLLMRolloutEngine(llm, tokenizer).sync_weights(model)
    state = model.state_dict()
    assert set(target.loaded) == set(state)
    assert all(target.loaded[k].data_ptr() == v.data_ptr() for k, v in state.items())  # no copies made here
    assert resets == [1]


def test_sync_weights_without_a_reachable_model_is_an_error(tiny):
    with pytest.raises(ConfigError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        VLLMRolloutEngine(SimpleNamespace(), tiny[2]).sync_weights(tiny[1])
