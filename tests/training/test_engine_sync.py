"""Every rollout comes from the current weights, for every engine.

vLLM keeps its own copy of the weights, so a trainer that forgets ``sync_weights`` samples the initial
policy for the whole run, which a CPU run with one shared module can never show. Here an engine holds its
own copy and changes it only through ``sync_weights``: the run must be identical, step by step and
weight by weight, to the one that samples from the policy module itself; one that ignores its syncs must not.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from corewarding.rollout.hf_engine import HFRolloutEngine
from corewarding.training.checkpoint import load_tensors
from corewarding.training.trainer import Trainer

VOLATILE = ("time/", "throughput/")


class OwnCopyEngine(HFRolloutEngine):
    """The transformers engine over a private copy of the model, updated only by ``sync_weights``."""

    def __init__(self, model, tokenizer, **kwargs):
        super().__init__(copy.deepcopy(model), tokenizer, **kwargs)
        self.synced: list[int] = []

    def sync_weights(self, model) -> None:
        with torch.no_grad():
            self.model.load_state_dict(model.state_dict())
        self.synced.append(id(model))


class NeverSyncedEngine(OwnCopyEngine):
    """The bug this file exists for: the engine's copy never changes."""

    def sync_weights(self, model) -> None:
        self.synced.append(id(model))


def _run(micro_config, tmp_path: Path, method: str, name: str, engine_cls=None) -> tuple[Path, Trainer]:
    cfg = micro_config(method, tmp_path, name, "trainer.sample_rollouts=1000", "optim.lr=1e-3")
    factory = None
    if engine_cls is not None:
        factory = lambda model, tok: engine_cls(  # noqa: E731
            model, tok, batch_size=cfg.rollout.batch_size, max_prompt_length=cfg.data.max_prompt_length
        )
    trainer = Trainer(cfg, progress=False, engine_factory=factory)
    trainer.train()
    return tmp_path / name, trainer


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _responses(run: Path) -> list[str]:
    return [
        json.loads(line)["response"]
        for f in sorted((run / "rollouts").glob("step-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def _state(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_tensors(run / "checkpoint-3" / "state" / name)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["co_rewarding_i", "co_rewarding_ii"])
def test_an_engine_with_its_own_weights_gives_the_shared_engines_run(micro_config, tmp_path, method):
    shared, _ = _run(micro_config, tmp_path, method, "shared")
    own, trainer = _run(micro_config, tmp_path, method, "own", OwnCopyEngine)

    rows = _metrics(shared)
    assert any(r.get("reward/mean", 0) > 0 for r in rows), "no reward at all: the comparison would be empty"
    assert _metrics(own) == rows  # rewards, pseudo-labels, losses, KL, validation
    assert _responses(own) == _responses(shared)
    a, b = _state(shared, "model.safetensors"), _state(own, "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "final policy weights differ"
    if method == "co_rewarding_ii":
        ta, tb = _state(shared, "teacher.safetensors"), _state(own, "teacher.safetensors")
        assert all(torch.equal(ta[k], tb[k]) for k in ta), "final teacher weights differ"

    # the engine really was synced: for the policy before the first validation, before sampling at steps 2
    # and 3 and for the last validation; for the teacher at every step; its copy ends as the trained policy
    policy, teacher = id(trainer.policy), id(trainer.teacher.model) if trainer.teacher else None
    engine = trainer.engine
    assert engine.synced.count(policy) == 4
    if teacher is not None:
        assert engine.synced.count(teacher) == 3
    else:
        pairs = zip(engine.model.parameters(), trainer.policy.parameters(), strict=True)
        assert all(torch.equal(p, q) for p, q in pairs)


@pytest.mark.slow
def test_an_engine_that_ignores_its_syncs_samples_a_different_run(micro_config, tmp_path):
    shared, _ = _run(micro_config, tmp_path, "co_rewarding_i", "shared")
    stale, _ = _run(micro_config, tmp_path, "co_rewarding_i", "stale", NeverSyncedEngine)
    first = len(_responses(shared)) // 3  # step 1 samples the initial policy either way
    assert _responses(stale)[:first] == _responses(shared)[:first]
    assert _responses(stale)[first:] != _responses(shared)[first:]
