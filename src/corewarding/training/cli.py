"""``corewarding train CONFIG.yaml [key=value ...]``: GRPO training with one reward method.

Runs on CPU, one GPU, or many processes under ``accelerate launch`` / ``torchrun``: the same command.
Overrides are dotted (``trainer.total_steps=2``) or a unique leaf name (``total_steps=2``). ``method`` is a
registered reward method or a plug-in's import path (``method=mypkg.rewards:MyReward``, a subclass of
``corewarding.rewards.RewardMethod``; its own options go in ``method_options.NAME=VALUE``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from corewarding.rewards import REGISTRY

    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides, e.g. method=majority_vote total_steps=2; method is a registered one "
        f"({', '.join(sorted(REGISTRY))}) or a plug-in's import path package.module:ClassName",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from corewarding.config import load_config

    cfg = load_config(args.config, args.overrides)  # validated before any model loads

    from corewarding.training.trainer import train

    result = train(cfg, progress=not args.no_progress)
    print(f"run directory: {result.run_dir}")
    if result.final_validation:
        print(
            "final validation: "
            + ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.final_validation.items()))
        )
    _exit_now_under_cpu_deepspeed()
    return 0


def _exit_now_under_cpu_deepspeed() -> None:
    """End the process at once after a DeepSpeed run on CPU processes, everything being written.

    There (gloo), a worker thread of one of ZeRO-3's asynchronous all-gathers can still hold a tensor when
    the interpreter finalises and abort the process ("terminate called without an active exception"),
    turning a finished run into a failed exit status about half of the time. GPU runs (NCCL) never get here.
    """
    import os
    import sys

    import torch

    from corewarding.training.sharding import deepspeed_launch

    if deepspeed_launch() and not torch.cuda.is_available():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
