"""DeepSpeed ZeRO-3 on two CPU processes over gloo: frozen engines, EMA on partitions, accumulation.

The pytest side launches this file under ``torchrun --nproc_per_node 2``; each rank writes what it
measured to a JSON file and the test asserts on both. Checked against unsharded copies computed in
every process from the same seeds:

* accelerate + DeepSpeed ZeRO-3 (fp32), three micro-batches per update through ``micro_batch_setup``:
  one optimizer step whose result equals DDP's (rank-averaged gradient, clipping, SGD) within 1e-5;
* ``prepare_frozen``: teacher/reference slices have the policy's ``numel`` (odd-sized parameters make
  the last slice padded); the KL reference stays at the initial weights;
* ``ema_update_partitions``: the gathered teacher equals the EMA of the full weights, and so do its
  logits (small parameters kept gathered by ZeRO-3 are refreshed);
* plain DeepSpeed with bf16: a teacher partitioned in bf16 by ``deepspeed.zero.Init`` (what
  ``zero3_init_flag`` does) is upcast to fp32, and a = 1e-4 moves it towards the fp32 master weights,
  not the bf16 copies.

Workers end with ``os._exit``: at interpreter exit, a gloo worker thread still holding a tensor of
one of ZeRO-3's async all-gathers can try to take the GIL during finalisation and abort the process
("terminate called without an active exception"), after all work has finished.
"""

from __future__ import annotations

import json
import os
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch

WORLD = 2
MICRO = 3  # micro-batches per update
LR = 0.5
A = 0.25
PERSIST = 100  # stage3_param_persistence_threshold: norms (14/61 elements) stay gathered


def _tiny(seed: int) -> torch.nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    # hidden 61 and vocab 509: odd-sized parameters, so the last rank's slice is padded
    cfg = Qwen3Config(
        vocab_size=509,
        hidden_size=61,
        intermediate_size=130,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=14,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg)


def _micro_batch(rank: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded sequences; lengths vary so token counts differ between micro-batches and ranks."""
    g = torch.Generator().manual_seed(1000 * rank + i)
    ids = torch.randint(0, 509, (2, 12), generator=g)
    lengths = torch.randint(4, 13, (2,), generator=g)
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return ids, mask


def _token_loss_sum(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


def _tokens(rank: int) -> int:
    return sum(int(_micro_batch(rank, i)[1][:, 1:].sum()) for i in range(MICRO))


def _gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    import deepspeed

    params = dict(model.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        return {k: v.detach().float().clone() for k, v in params.items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k].float()).abs().max()) for k in a)


def _probe() -> tuple[torch.Tensor, torch.Tensor]:
    return _micro_batch(99, 0)


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids, mask = _probe()
    return model(input_ids=ids, attention_mask=mask).logits.float()


def _accelerate_fp32(rank: int) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    from corewarding.training.zero3 import (
        ema_update_partitions,
        local_master_partition,
        micro_batch_setup,
        prepare_frozen,
    )

    ds_config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": PERSIST},
        "bf16": {"enabled": "auto"},
    }
    # cpu=False so accelerate drives DeepSpeed; gloo explicitly, else it sees no backend without CUDA
    accelerator = Accelerator(
        deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=ds_config),
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")],
    )
    out: dict = {"num_processes": accelerator.num_processes, "process_index": accelerator.process_index}

    policy = _tiny(0)
    init = deepcopy(policy)
    ref = deepcopy(policy)
    plan = micro_batch_setup(accelerator, MICRO, micro_batch_size=2)
    out["loss_scale"] = plan.loss_scale
    opt = torch.optim.SGD(policy.parameters(), lr=LR)
    policy, opt = accelerator.prepare(policy, opt)
    out["ds_gas"] = policy.gradient_accumulation_steps()
    teacher = prepare_frozen(deepcopy(init), accelerator, fp32=True)
    kl_ref = prepare_frozen(deepcopy(init), accelerator)

    t_params = dict(teacher.module.named_parameters())
    numels = []
    for name, p in policy.module.named_parameters():
        numels.append(
            (t_params[name].ds_tensor.numel(), p.ds_tensor.numel(), local_master_partition(p).numel())
        )
    out["numel_equal"] = all(len(set(n)) == 1 for n in numels)
    out["padded"] = any(p.ds_numel % WORLD for p in policy.module.parameters())
    out["persistent"] = sum(bool(getattr(p, "ds_persist", False)) for p in teacher.module.parameters())
    out["teacher_logits0"] = float((_logits(teacher) - _logits(init)).abs().max())
    _logits(teacher)  # after a second forward (trace complete) ZeRO-3 keeps the small parameters gathered
    out["gathered_at_ema"] = sum(
        p.ds_status == ZeroParamStatus.AVAILABLE for p in teacher.module.parameters()
    )

    # one update: MICRO micro-batches, losses normalised by this rank's token count for the update
    n_tokens = _tokens(rank)
    policy.train()
    for i in range(MICRO):
        ids, mask = _micro_batch(rank, i)
        plan.backward(accelerator, _token_loss_sum(policy, ids, mask) / n_tokens, i)
    opt.step()
    opt.zero_grad()
    out["global_steps"] = policy.global_steps

    # DDP reference: every rank's accumulated gradient, averaged over ranks, clipped, one SGD step
    for r in range(WORLD):
        for i in range(MICRO):
            (_token_loss_sum(ref, *_micro_batch(r, i)) / (_tokens(r) * WORLD)).backward()
    out["ref_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0))
    with torch.no_grad():
        for p in ref.parameters():
            p -= LR * p.grad
    full = _gathered(policy.module)
    ref_state = dict(ref.named_parameters())
    init_state = dict(init.named_parameters())
    out["update_max"] = _max_diff(dict(ref_state), {k: v.detach() for k, v in init_state.items()})
    out["policy_vs_ddp"] = _max_diff(full, {k: v.detach() for k, v in ref_state.items()})

    # EMA on partitions vs EMA on the full weights
    ema_update_partitions(teacher, policy, A)
    teacher_ref = deepcopy(init)
    with torch.no_grad():
        for name, p in teacher_ref.named_parameters():
            p.lerp_(ref_state[name].detach(), A)
    out["teacher_vs_ref"] = _max_diff(_gathered(teacher.module), dict(teacher_ref.named_parameters()))
    out["teacher_logits_vs_ref"] = float((_logits(teacher) - _logits(teacher_ref)).abs().max())
    out["teacher_dtype"] = str(next(iter(t_params.values())).ds_tensor.dtype)
    out["kl_ref_logits_vs_init"] = float((_logits(kl_ref) - _logits(init)).abs().max())
    return out


def _deepspeed_bf16(rank: int) -> dict:
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    from corewarding.training.zero3 import ema_update_partitions, prepare_frozen

    a = 1e-4
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": PERSIST},
        "bf16": {"enabled": True},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
    }
    policy = _tiny(1)
    policy, *_ = deepspeed.initialize(model=policy, model_parameters=policy.parameters(), config=config)
    with deepspeed.zero.Init(config_dict_or_path=config):
        teacher = _tiny(2)
    out: dict = {"teacher_dtype_before": str(next(teacher.parameters()).ds_tensor.dtype)}
    teacher = prepare_frozen(teacher, config, fp32=True)
    out["teacher_dtype_after"] = str(next(teacher.module.parameters()).ds_tensor.dtype)
    out["policy_dtype"] = str(next(policy.module.parameters()).ds_tensor.dtype)

    teacher0 = _gathered(teacher.module)
    plain = _tiny(2)
    plain.load_state_dict(teacher0, strict=False)
    with torch.no_grad():  # zero.Init rounded the rotary inv_freq buffers to bf16 too (as the policy's)
        for name, buffer in teacher.module.named_buffers():
            plain.get_buffer(name).copy_(buffer)
    out["upcast_logits_vs_plain"] = float((_logits(teacher) - _logits(plain)).abs().max())

    ids, mask = _micro_batch(rank, 0)
    loss = _token_loss_sum(policy, ids, mask) / int(mask[:, 1:].sum())
    policy.backward(loss)
    policy.step()

    names = [n for n, _ in policy.module.named_parameters()]
    master = {n: safe_get_full_fp32_param(p).float() for n, p in policy.module.named_parameters()}
    bf16_copy = _gathered(policy.module)
    ema_update_partitions(teacher, policy, a)
    teacher1 = _gathered(teacher.module)
    out["moved"] = all(not torch.equal(teacher1[n], teacher0[n]) for n in names)
    out["equals_master_ema"] = all(torch.equal(teacher1[n], teacher0[n].lerp(master[n], a)) for n in names)
    out["equals_bf16_ema"] = all(torch.equal(teacher1[n], teacher0[n].lerp(bf16_copy[n], a)) for n in names)
    return out


def _worker(out_dir: str) -> None:
    rank = int(os.environ["RANK"])
    result = {"accelerate_fp32": _accelerate_fp32(rank), "deepspeed_bf16": _deepspeed_bf16(rank)}
    import torch.distributed as dist

    dist.barrier()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="module")
def results(tmp_path_factory, torchrun) -> list[dict]:
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("zero3")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = torchrun([__file__, str(out)], env=env, timeout=600, processes=WORLD)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_accelerate_sees_the_world(results):
    for rank, res in enumerate(results):
        r = res["accelerate_fp32"]
        assert (r["num_processes"], r["process_index"]) == (WORLD, rank)


def test_frozen_partitions_match_policy(results):
    for res in results:
        r = res["accelerate_fp32"]
        assert r["numel_equal"] and r["padded"]
        assert r["persistent"] > 0
        assert r["teacher_dtype"] == "torch.float32"
        assert r["teacher_logits0"] < 1e-5
        assert r["kl_ref_logits_vs_init"] < 1e-5


def test_accumulated_update_equals_ddp(results):
    for res in results:
        r = res["accelerate_fp32"]
        assert r["ds_gas"] == MICRO and r["loss_scale"] == MICRO
        assert r["global_steps"] == 1  # one optimizer step for MICRO micro-batches
        assert r["update_max"] > 1e-3  # the update is large enough for the comparison to mean something
        assert r["policy_vs_ddp"] < 1e-5


def test_ema_on_partitions_equals_ema_on_full_weights(results):
    for res in results:
        r = res["accelerate_fp32"]
        assert r["gathered_at_ema"] > 0  # so the refresh of kept-gathered parameters is exercised
        assert r["teacher_vs_ref"] < 1e-6
        assert r["teacher_logits_vs_ref"] < 1e-5


def test_fp32_teacher_follows_fp32_master_under_bf16(results):
    for res in results:
        r = res["deepspeed_bf16"]
        assert r["teacher_dtype_before"] == "torch.bfloat16"
        assert r["teacher_dtype_after"] == "torch.float32"
        assert r["policy_dtype"] == "torch.bfloat16"
        assert r["upcast_logits_vs_plain"] < 1e-5
        assert r["moved"]
        assert r["equals_master_ema"]
        assert not r["equals_bf16_ema"]


if __name__ == "__main__":
    _worker(sys.argv[1])
