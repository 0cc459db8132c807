"""``corewarding build-base``: pretrain the micro-world base model that ships with the package.

``corewarding demo`` and ``compare`` start from ``corewarding/microworld/shipped_base/`` when it was built
for the current world and recipe (its log records the fingerprint), which saves a first demo its longest
part. This command is how that directory is made: the same pretraining ``demo --pretrain-base`` runs, with
seed 0 and the default world, written over the shipped copy (about 2 minutes on 2 cores). Run it after
changing the world, its tokenizer or the pretraining recipe, then commit the directory.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from corewarding.files import require_output_dir
    from corewarding.microworld import base_model
    from corewarding.microworld.base_model import LOG_FILE, build_shipped_base

    # before two minutes of pretraining: the model is written beside the folder and renamed over it, so both
    # the folder and its parent (the installed package, which may be read-only) must be writable
    require_output_dir(base_model.SHIPPED_DIR, "the shipped base folder")
    require_output_dir(base_model.SHIPPED_DIR.parent, "the folder of the shipped base")
    out = build_shipped_base(progress=not args.no_progress)
    log = json.loads((out / LOG_FILE).read_text())
    print(
        f"wrote {out} (fingerprint {log['fingerprint']}, {log['parameters']:,} parameters, "
        f"final loss {log['losses'][-1]:.3f}, {log['seconds']:.0f} s on {log['machine']['cpus']} CPUs)"
    )
    return 0
