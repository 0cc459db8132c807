"""``corewarding train CONFIG.yaml [key=value ...]``: GRPO training with one reward method.

Runs on CPU, one GPU, or many processes under ``accelerate launch`` / ``torchrun``: the same command.
Overrides are dotted (``trainer.total_steps=2``) or a unique leaf name (``total_steps=2``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. method=majority_vote total_steps=2"
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
    return 0
