"""The slow micro-world tests start from the shipped base model, as ``make demo`` does."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def shipped_base():
    """Fail at once, not after minutes of pretraining, when the shipped base no longer fits the code (the
    demo and compare would then pretrain a new base before their first step)."""
    from corewarding.microworld.base_model import PretrainConfig, model_fingerprint, shipped_fingerprint
    from corewarding.microworld.world import WorldConfig, build_world

    default = model_fingerprint(build_world(config=WorldConfig()), PretrainConfig(), 0)
    assert shipped_fingerprint() == default, (
        "the shipped base was built for another world or recipe: run `corewarding build-base`"
    )
