"""The ``corewarding`` command: parses arguments and hands off to one function per subcommand.

Each subcommand lives in the module that owns its work and exposes ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import heavy libraries (torch, transformers) inside ``run`` so that
``corewarding --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from corewarding import __version__
from corewarding.errors import CorewardingError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("corewarding.training.cli", "train a model with GRPO and a (self-)rewarding method"),
    "eval": ("corewarding.evaluation.cli", "evaluate a model on math benchmarks (avg@k, pass@k, maj@k)"),
    "solve": ("corewarding.evaluation.solve", "answer one question with k samples and a vote"),
    "grade": ("corewarding.answers.grading", "grade predictions in a JSONL file against golds"),
    "rephrase": ("corewarding.rephrase.cli", "build the rephrased view of a question set"),
    "demo": ("corewarding.microworld.demo", "offline micro-world demo: Co-rewarding-I on a CPU"),
    "compare": ("corewarding.microworld.compare", "run every method on the micro-world and compare"),
    "build-base": (
        "corewarding.microworld.build_base",
        "pretrain the micro-world base model shipped with the package",
    ),
    "plan": ("corewarding.training.plan_cli", "per-GPU memory plan of a training config: does it fit?"),
    "push": ("corewarding.reporting.push", "upload an exported checkpoint and its model card to the Hub"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corewarding",
        description="Co-rewarding: self-supervised RL for LLM reasoning without ground-truth labels.",
    )
    parser.add_argument("--version", action="version", version=f"corewarding {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(
            name, help=help_text, description=(mod.__doc__ or help_text).strip().split("\n")[0]
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _silence_library_progress_bars() -> None:
    """``--no-progress`` / ``--quiet`` also mean no "Loading weights" bars from transformers."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the parser works without the ML stack
        return
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # key=value overrides may follow options (``train cfg.yaml --no-progress resume=true``)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    if getattr(args, "no_progress", False) or getattr(args, "quiet", False):
        _silence_library_progress_bars()
    try:
        return int(args._run(args) or 0)
    except CorewardingError as err:
        print(f"corewarding {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
