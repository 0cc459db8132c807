"""The vLLM engine's parts that run without a GPU: prompt encoding, output conversion, errors, and the
colocated-training protocol (streamed weight sync from fp32, wrapped and FSDP2-sharded modules; sleep and
wake) against fakes that mirror the vLLM objects the engine touches.

Generation itself needs vllm and a CUDA device; the test for it runs only where vllm is installed.
"""

from __future__ import annotations

import copy
import socket
import sys
import types
import warnings
from types import SimpleNamespace

import pytest
import torch

from corewarding.data import SYSTEM_PROMPT, Question, load_questions
from corewarding.errors import ConfigError
from corewarding.rollout.factory import make_engine
from corewarding.rollout.hf_engine import HFRolloutEngine
from corewarding.rollout.types import SamplingParams
from corewarding.rollout.vllm_engine import (
    VLLMRolloutEngine,
    _vllm_dtype,
    deepest_safe_sleep_level,
    engine_dtype_for,
    import_vllm,
    iter_full_weights,
    rollouts_from_outputs,
)

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
    # parameters (a tied lm_head once, as model.embed_tokens) and persistent buffers: what a checkpoint has
    expected = dict(model.named_parameters())
    assert set(target.loaded) == set(expected) and set(expected) <= set(model.state_dict())
    assert all(target.loaded[k].data_ptr() == v.data_ptr() for k, v in expected.items())  # no copies here
    assert resets == [1]


def test_sync_weights_without_a_reachable_model_is_an_error(tiny):
    with pytest.raises(ConfigError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        VLLMRolloutEngine(SimpleNamespace(), tiny[2]).sync_weights(tiny[1])


# ---------------------------------------------------------------------------------------------------------
# Fakes of the vLLM objects the engine touches, with their real signatures.

STACKED_PARAMS = [  # vllm/model_executor/models/qwen2.py, Qwen2Model.load_weights
    ("qkv_proj", "q_proj", "q"),
    ("qkv_proj", "k_proj", "k"),
    ("qkv_proj", "v_proj", "v"),
    ("gate_up_proj", "gate_proj", 0),
    ("gate_up_proj", "up_proj", 1),
]


def _add_parameter(root: torch.nn.Module, dotted: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, torch.nn.Module())
        module = getattr(module, part)
    module.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape, dtype=dtype), requires_grad=False))


class FakeVLLMQwen3(torch.nn.Module):
    """vLLM's ``Qwen3ForCausalLM`` as far as weights go: its own parameters in its own dtype, q/k/v fused
    into ``qkv_proj`` and gate/up into ``gate_up_proj``, loaded by ``load_weights(iterable of (name,
    tensor))`` the way ``Qwen2Model.load_weights`` does it (skip ``rotary_emb.inv_freq``; KeyError on any
    other unknown name; skip ``lm_head.`` when embeddings are tied)."""

    def __init__(self, config, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        hd, h, inter = config.head_dim, config.hidden_size, config.intermediate_size
        self.q_size, self.kv_size, self.inter = (
            config.num_attention_heads * hd,
            config.num_key_value_heads * hd,
            inter,
        )
        self.tied = config.tie_word_embeddings
        self.mapped = True  # False while vLLM's weight memory is released (sleep)
        self.load_calls: list[list[str]] = []
        shapes = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,)}
        for i in range(config.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes |= {
                p + "self_attn.qkv_proj.weight": (self.q_size + 2 * self.kv_size, h),
                p + "self_attn.o_proj.weight": (h, self.q_size),
                p + "self_attn.q_norm.weight": (hd,),
                p + "self_attn.k_norm.weight": (hd,),
                p + "mlp.gate_up_proj.weight": (2 * inter, h),
                p + "mlp.down_proj.weight": (h, inter),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        if not self.tied:
            shapes["lm_head.weight"] = (config.vocab_size, h)
        for name, shape in shapes.items():
            _add_parameter(self, name, shape, dtype)

    def _shard(self, shard_id) -> slice:
        q, kv, inter = self.q_size, self.kv_size, self.inter
        return {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}.get(
            shard_id, slice(shard_id * inter, (shard_id + 1) * inter) if isinstance(shard_id, int) else None
        )

    @torch.no_grad()
    def load_weights(self, weights) -> set[str]:
        if not self.mapped:
            raise RuntimeError("load_weights wrote into released (sleeping) GPU memory")
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        names: list[str] = []
        for name, tensor in weights:
            names.append(name)
            if "rotary_emb.inv_freq" in name or (self.tied and name.startswith("lm_head.")):
                continue
            for param_name, weight_name, shard_id in STACKED_PARAMS:
                if weight_name not in name:
                    continue
                name = name.replace(weight_name, param_name)
                params[name].data[self._shard(shard_id)].copy_(tensor)
                break
            else:
                params[name].data.copy_(tensor)  # KeyError for a name vLLM does not know, as in vLLM
            loaded.add(name)
        self.load_calls.append(names)
        return loaded

    def as_hf(self) -> dict[str, torch.Tensor]:
        """The weights under Hugging Face names (the fused ones split again)."""
        out: dict[str, torch.Tensor] = {}
        for name, param in self.named_parameters():
            for param_name, weight_name, shard_id in STACKED_PARAMS:
                if param_name in name:
                    out[name.replace(param_name, weight_name)] = param.data[self._shard(shard_id)]
            if "qkv_proj" not in name and "gate_up_proj" not in name:
                out[name] = param.data
        return out


class FakeLLM:
    """``vllm.LLM`` as the engine uses it (vllm/entrypoints/llm.py): ``generate``, ``sleep(level)``,
    ``wake_up(tags=None)``, ``reset_prefix_cache()``, and the in-process model at
    ``llm_engine.model_executor.driver_worker.worker.model_runner.model``. Level 1 sleep keeps the
    weights (offloaded to CPU), level 2 discards them (here: NaN), as vLLM's CuMem allocator does."""

    def __init__(self, model: FakeVLLMQwen3, eos: int):
        self.model, self.eos = model, eos
        runner = SimpleNamespace(model_runner=SimpleNamespace(model=model))
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=runner))
        )
        self.calls: list[tuple] = []
        self.sleeping: set[str] = set()
        self.prefix_resets = 0

    def generate(self, prompts, sampling_params=None, *, use_tqdm: bool = True):
        if self.sleeping:
            raise RuntimeError(f"generate while {sorted(self.sleeping)} sleep")
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise RuntimeError("sampled from discarded weights")
        self.calls.append(("generate", len(prompts)))
        n = sampling_params.n
        return [
            SimpleNamespace(outputs=[_completion(i, [self.eos], "", "stop") for i in range(n)])
            for _ in prompts
        ]

    def reset_prefix_cache(self, device=None) -> bool:
        self.prefix_resets += 1
        return True

    @torch.no_grad()
    def sleep(self, level: int = 1):
        self.reset_prefix_cache()  # LLM.sleep resets the prefix cache first
        self.calls.append(("sleep", level))
        self.sleeping = {"weights", "kv_cache"}
        self.model.mapped = False
        if level == 2:
            for p in self.model.parameters():
                p.fill_(float("nan"))

    def wake_up(self, tags: list[str] | None = None):
        self.calls.append(("wake_up", None if tags is None else tuple(tags)))
        woken = {"weights", "kv_cache"} if tags is None else set(tags)
        self.sleeping -= woken
        if "weights" in woken:
            self.model.mapped = True


class FakeLLMWithoutWakeTags(FakeLLM):
    """vLLM 0.7.0 - 0.8.2: ``wake_up()`` takes no tags and wakes everything."""

    def wake_up(self):
        super().wake_up(None)


class FakeLLMWithoutSleep:
    """vLLM < 0.7.0: no sleep mode at all."""

    def __init__(self, model: FakeVLLMQwen3, eos: int):
        inner = FakeLLM(model, eos)
        self.llm_engine, self.generate, self.reset_prefix_cache = (
            inner.llm_engine,
            inner.generate,
            inner.reset_prefix_cache,
        )


@pytest.fixture
def fake_vllm(monkeypatch, tiny):
    """A ``vllm`` module whose ``LLM`` builds a :class:`FakeLLM` from the model directory it is given."""
    from transformers import AutoConfig

    eos = tiny[2].eos_token_id
    module = types.ModuleType("vllm")
    module.__version__ = "0.9.2"
    module.built = []

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM(FakeLLM):
        def __init__(self, model: str, **kwargs):
            module.built.append({"model": model, **kwargs})
            dtype = torch.float32 if kwargs["dtype"] == "auto" else getattr(torch, kwargs["dtype"])
            super().__init__(FakeVLLMQwen3(AutoConfig.from_pretrained(model), dtype), eos)

    module.SamplingParams, module.LLM = SamplingParams, LLM
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return module


def _hf_weights(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: p.detach().to(dtype) for name, p in model.named_parameters()}


def _assert_holds(llm: FakeLLM, model, dtype: torch.dtype = torch.bfloat16) -> None:
    held, expected = llm.model.as_hf(), _hf_weights(model, dtype)
    assert set(held) == set(expected)
    for name, tensor in expected.items():
        assert held[name].dtype == dtype and torch.equal(held[name], tensor), name


def _fake_engine(tiny, llm_cls=FakeLLM, **kwargs):
    llm = llm_cls(FakeVLLMQwen3(tiny[1].config, torch.bfloat16), tiny[2].eos_token_id)
    return VLLMRolloutEngine(llm, tiny[2], dtype=torch.bfloat16, **kwargs), llm


PROMPTS = [Question.from_text("a", "What is $1+1$?").messages, Question.from_text("b", "Find x.").messages]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=4)


# ---------------------------------------------------------------------------------------------------------
# (a) streamed sync from an fp32 module into a bf16 engine


@pytest.mark.parametrize("cast_by", ["engine", "vllm"])
def test_sync_weights_copies_an_fp32_module_into_the_bf16_engine(tiny, cast_by):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny)
    if cast_by == "vllm":
        engine.dtype = None  # unknown: the cast is left to vLLM's copy_ (same rounding)
    assert next(model.parameters()).dtype == torch.float32
    engine.sync_weights(model)
    _assert_holds(llm, model)
    assert llm.prefix_resets == 1
    sent = [name for call in llm.model.load_calls for name in call]
    assert "model.rotary_emb.inv_freq" not in sent and "model.rotary_emb.original_inv_freq" not in sent
    assert len(sent) == len(set(sent)) == len(dict(model.named_parameters()))


def test_weights_are_streamed_in_bounded_batches(tiny):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny)
    engine.sync_chunk_bytes = 64 * 1024
    engine.sync_weights(model)
    _assert_holds(llm, model)
    sizes = {name: p.numel() * 2 for name, p in model.named_parameters()}  # bf16 bytes
    assert len(llm.model.load_calls) > 1
    for call in llm.model.load_calls:
        assert len(call) == 1 or sum(sizes[n] for n in call) <= engine.sync_chunk_bytes


def test_wrapped_modules_are_unwrapped_and_only_checkpoint_tensors_are_sent(tiny):
    _, model, _ = tiny

    class Wrapper(torch.nn.Module):  # DDP / accelerate style
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    names = [name for name, _ in iter_full_weights(Wrapper(model))]
    assert names == [name for name, _ in model.named_parameters()]  # the tiny model has no persistent buffer
    assert set(names) <= set(model.state_dict())
    engine, llm = _fake_engine(tiny)
    engine.sync_weights(Wrapper(model))
    _assert_holds(llm, model)


def test_a_failed_sync_leaves_the_engine_refusing_to_sample(tiny, fake_vllm):
    _, model, _ = tiny
    engine, _ = _fake_engine(tiny)
    engine.sync_weights(model)
    other = copy.deepcopy(model)
    other.register_parameter("extra", torch.nn.Parameter(torch.zeros(2)))  # vLLM knows no such weight
    with pytest.raises(KeyError):
        engine.sync_weights(other)
    with pytest.raises(RuntimeError, match=r"call engine.sync_weights\(model\)"):
        engine.generate(PROMPTS, 1, GREEDY)
    engine.sync_weights(model)
    assert len(engine.generate(PROMPTS, 1, GREEDY)) == 2


# ---------------------------------------------------------------------------------------------------------
# (b) sync from an FSDP2-sharded module (a real 1-process gloo group)


@pytest.fixture
def gloo_group():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_sync_weights_gathers_fsdp2_shards(tiny, gloo_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    _, model, _ = tiny
    full = copy.deepcopy(model)
    sharded = copy.deepcopy(model)
    mesh = init_device_mesh("cpu", (1,))
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    engine, llm = _fake_engine(tiny)
    engine.sync_weights(sharded)
    _assert_holds(llm, full)
    gathered = dict(iter_full_weights(sharded))
    assert not any(isinstance(t, DTensor) for t in gathered.values())
    assert all(torch.equal(gathered[n], p.detach()) for n, p in full.named_parameters())


def test_make_engine_for_a_sharded_policy(tiny, gloo_group, fake_vllm):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    path, model, tokenizer = tiny
    sharded = copy.deepcopy(model)
    fully_shard(sharded, mesh=init_device_mesh("cpu", (1,)))
    engine = make_engine("vllm", sharded, tokenizer)
    assert fake_vllm.built[0]["model"] == str(path)  # its directory: a sharded module cannot be saved
    _assert_holds(engine.llm, model, torch.float32)
    sharded.config._name_or_path = ""
    with pytest.raises(ConfigError, match="sharded"):
        make_engine("vllm", sharded, tokenizer)


# ---------------------------------------------------------------------------------------------------------
# (c) sleep and wake around the policy update, and the teacher through the same engine


def test_level2_sleep_discards_weights_until_the_next_sync(tiny, fake_vllm):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny, sleep_level=2)
    engine.sync_weights(model)
    assert len(engine.generate(PROMPTS, 2, GREEDY)) == 4
    engine.release_memory()
    assert llm.calls[-1] == ("sleep", 2) and llm.sleeping == {"weights", "kv_cache"}
    engine.release_memory()  # already asleep: nothing to release twice
    assert llm.calls[-1] == ("sleep", 2) and [c for c in llm.calls if c[0] == "sleep"] == [("sleep", 2)]
    with pytest.raises(RuntimeError, match=r"discarded.*sync_weights"):
        engine.generate(PROMPTS, 2, GREEDY)
    llm.calls.clear()
    engine.sync_weights(model)
    assert llm.calls == [("wake_up", ("weights",))]  # no KV cache while the weights arrive
    assert llm.sleeping == {"kv_cache"}
    _assert_holds(llm, model)
    engine.generate(PROMPTS, 2, GREEDY)
    assert llm.calls[1:] == [("wake_up", ("kv_cache",)), ("generate", 2)]
    assert not llm.sleeping


def test_release_after_a_sync_without_sampling_sleeps_cleanly(tiny, fake_vllm):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny, sleep_level=2)
    engine.sync_weights(model)
    engine.release_memory()
    engine.sync_weights(model)  # weights awake, KV cache still released
    llm.calls.clear()
    engine.release_memory()
    assert llm.calls == [("wake_up", ("kv_cache",)), ("sleep", 2)]
    engine.sync_weights(model)
    assert len(engine.generate(PROMPTS, 1, GREEDY)) == 2


def test_level1_sleep_keeps_the_weights(tiny, fake_vllm):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny, sleep_level=1)
    engine.sync_weights(model)
    engine.release_memory()
    llm.calls.clear()
    assert len(engine.generate(PROMPTS, 1, GREEDY)) == 2  # no sync needed: vLLM restores them from CPU
    assert llm.calls == [("wake_up", None), ("generate", 2)]
    _assert_holds(llm, model)


def test_teacher_and_policy_take_turns_in_one_engine(tiny, fake_vllm):
    _, policy, _ = tiny
    teacher = copy.deepcopy(policy)
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(0.5)
    engine, llm = _fake_engine(tiny, sleep_level=2)
    engine.sync_weights(policy)
    engine.generate(PROMPTS, 2, GREEDY)
    engine.sync_weights(teacher)
    _assert_holds(llm, teacher)
    engine.generate(PROMPTS, 2, GREEDY)
    engine.sync_weights(policy)
    _assert_holds(llm, policy)
    assert not [c for c in llm.calls if c[0] in ("sleep", "wake_up")]  # awake throughout the step
    assert llm.prefix_resets == 3  # a teacher prompt's cached keys must not serve the policy


def test_wake_up_without_tags_wakes_everything(tiny, fake_vllm):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny, llm_cls=FakeLLMWithoutWakeTags, sleep_level=2)
    engine.sync_weights(model)
    engine.release_memory()
    llm.calls.clear()
    engine.sync_weights(model)
    engine.generate(PROMPTS, 1, GREEDY)
    assert llm.calls == [("wake_up", None), ("generate", 2)]


def test_without_sleep_support_release_memory_is_a_noop_that_warns_once(tiny, fake_vllm):
    _, model, _ = tiny
    engine, _ = _fake_engine(tiny, llm_cls=FakeLLMWithoutSleep, sleep_level=2)
    engine.sync_weights(model)
    with pytest.warns(RuntimeWarning, match="no sleep mode"):
        engine.release_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.release_memory()
    assert len(engine.generate(PROMPTS, 1, GREEDY)) == 2  # weights never left


def test_sleep_not_asked_means_release_memory_does_nothing(tiny, fake_vllm):
    _, model, _ = tiny
    engine, llm = _fake_engine(tiny)
    engine.sync_weights(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.release_memory()
    assert not llm.calls


# ---------------------------------------------------------------------------------------------------------
# (d) make_engine("vllm") builds vllm.LLM with the colocation options; (e) its dtype


def test_make_engine_passes_the_colocation_options_to_vllm(tiny, fake_vllm):
    path, model, tokenizer = tiny
    engine = make_engine(
        "vllm", model, tokenizer, max_prompt_length=64, gpu_memory_utilization=0.3, seed=7, max_model_len=512
    )
    (kwargs,) = fake_vllm.built
    assert kwargs["model"] == str(path) and kwargs["gpu_memory_utilization"] == 0.3
    assert kwargs["enable_sleep_mode"] is True and kwargs["seed"] == 7 and kwargs["max_model_len"] == 512
    assert kwargs["dtype"] == "float32"  # a CPU fp32 module keeps fp32; see the CUDA case below
    assert "distributed_executor_backend" not in kwargs  # a single process
    assert (
        isinstance(engine, VLLMRolloutEngine) and engine.sleep_level == 2 and engine.max_prompt_length == 64
    )
    _assert_holds(engine.llm, model, torch.float32)  # synced at construction
    assert len(engine.generate(PROMPTS, 2, GREEDY)) == 4
    engine.release_memory()
    assert engine.llm.calls[-1] == ("sleep", 2)


def test_make_engine_defaults_and_no_sleep(tiny, fake_vllm):
    _, model, tokenizer = tiny
    engine = make_engine("vllm", model, tokenizer, sleep_between_steps=False)
    (kwargs,) = fake_vllm.built
    assert kwargs["gpu_memory_utilization"] == 0.4 and "enable_sleep_mode" not in kwargs
    assert "max_model_len" not in kwargs and engine.sleep_level is None


def test_vllm_without_sleep_mode_builds_without_it_and_warns(tiny, fake_vllm, monkeypatch):
    _, model, tokenizer = tiny
    monkeypatch.delattr(FakeLLM, "sleep")
    with pytest.warns(RuntimeWarning, match="no sleep mode"):
        engine = make_engine("vllm", model, tokenizer)
    assert "enable_sleep_mode" not in fake_vllm.built[0] and engine.sleep_level is None


def test_platform_without_sleep_mode_builds_without_it(tiny, fake_vllm, monkeypatch):
    _, model, tokenizer = tiny
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_sleep_mode_available=lambda: False)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    with pytest.warns(RuntimeWarning, match="no sleep mode"):
        make_engine("vllm", model, tokenizer)
    assert "enable_sleep_mode" not in fake_vllm.built[0]


def test_multi_process_runs_use_the_external_launcher(tiny, fake_vllm, monkeypatch):
    _, model, tokenizer = tiny
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    make_engine("vllm", model, tokenizer)
    assert fake_vllm.built[0]["distributed_executor_backend"] == "external_launcher"


@pytest.mark.parametrize(
    ("version", "level"), [("0.7.3", 1), ("0.8.4", 1), ("0.8.5", 2), ("0.10.1.post1", 2), ("0.1.dev5+g12", 1)]
)
def test_sleep_level_follows_the_vllm_version(version, level):
    assert deepest_safe_sleep_level(SimpleNamespace(__version__=version)) == level


def _stub_module(dtype: torch.dtype, device: str):
    param = SimpleNamespace(dtype=dtype, device=torch.device(device), is_floating_point=lambda: True)
    return SimpleNamespace(parameters=lambda: iter([param]))


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        (torch.float32, "cuda", "bfloat16"),  # fp32 master weights must not make vLLM run fp32
        (torch.float32, "cpu", "float32"),
        (torch.bfloat16, "cuda", "bfloat16"),
        (torch.float16, "cuda", "float16"),
    ],
)
def test_engine_dtype_for_a_module(dtype, device, expected):
    assert engine_dtype_for(_stub_module(dtype, device)) == expected


def test_for_model_takes_an_explicit_dtype(tiny, fake_vllm):
    _, model, tokenizer = tiny
    engine = VLLMRolloutEngine.for_model(model, tokenizer, dtype="bf16")
    assert fake_vllm.built[0]["dtype"] == "bfloat16" and engine.dtype == torch.bfloat16
    _assert_holds(engine.llm, model, torch.bfloat16)
