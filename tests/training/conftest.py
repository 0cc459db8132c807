"""A small micro-world whose base model answers in ``\\boxed{}`` often enough for votes to mean something.

A random tiny model never produces an answer, so every reward is 0, every advantage is 0 and a training
step hardly changes the weights: tests of what a step does (syncing engines, precision, sharding, resume)
would pass against a trainer that does nothing. This base (400 pretraining steps, about 15 s on 2 cores)
answers most questions, right about a quarter of the time, so rewards vary within groups.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from corewarding.microworld.base_model import PretrainConfig
from corewarding.microworld.experiment import Budget, prepare, train_config
from corewarding.microworld.world import WorldConfig

WORLD = WorldConfig(n_train=64, n_val=16, n_test=16)
PRETRAIN = replace(
    PretrainConfig(),
    hidden_size=64,
    num_layers=2,
    intermediate_size=128,
    steps=400,
    batch_size=32,
    n_problems=300,
)
BUDGET = Budget(steps=3, questions_per_step=4, group_size=4, val_every=3, val_n=2)


def free_port() -> int:
    """A TCP port nobody listens on now: each multi-process launch gets its own, so two test sessions on
    one machine (or a port left in TIME_WAIT) cannot make a run connect to the wrong rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(args, env=..., timeout=...)``: ``args`` (a script, or ``-m module``, and its arguments) in
    2 processes under ``torch.distributed.run`` on a free port; returns the finished process, its output
    captured as text."""

    def run(
        args: list[str], *, env: dict[str, str], timeout: float, cwd: Path | None = None, processes: int = 2
    ) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        cmd += ["--master_port", str(free_port()), *map(str, args)]
        return subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True)

    return run


@pytest.fixture(scope="session")
def micro_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    return prepare(root, WORLD, pretrain_config=PRETRAIN, cache_dir=root / "cache", progress=False)


@pytest.fixture
def micro_config(micro_setup):
    """``micro_config(method, output_dir, run_name, *overrides)``: a 3-step training config on the world."""

    def make(method: str, output_dir: Path, run_name: str, *overrides: str):
        return train_config(micro_setup, method, BUDGET, output_dir, run_name, list(overrides))

    return make
