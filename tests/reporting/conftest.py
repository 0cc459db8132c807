"""One real run of the tiny CPU config whose checkpoint the model-card and push tests read.

Co-rewarding-II (a teacher, EMA settings) for 2 steps, validating at step 2, with ``trainer.push_to_hub``
on: ``HfApi.create_repo`` / ``upload_folder`` are replaced by recorders, so the end-of-training push is
observed without any network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO_ID = "my-org/tiny-co-rewarding-ii"


@dataclass
class HubCalls:
    """What the mocked ``HfApi`` was asked to do."""

    create_repo: list[dict[str, Any]] = field(default_factory=list)
    upload_folder: list[dict[str, Any]] = field(default_factory=list)


def record_hub_calls(monkeypatch) -> HubCalls:
    """Replace ``HfApi.create_repo`` and ``HfApi.upload_folder`` with recorders; what they record."""
    from huggingface_hub import HfApi

    calls = HubCalls()

    def create_repo(self, repo_id, **kwargs):
        calls.create_repo.append({"repo_id": repo_id, **kwargs})
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        kwargs["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        calls.upload_folder.append(kwargs)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def hub_calls(monkeypatch) -> HubCalls:
    """``HfApi.create_repo`` / ``upload_folder`` recorded instead of run, for one test."""
    return record_hub_calls(monkeypatch)


@dataclass
class TrainedRun:
    cfg: Any
    run_dir: Path
    checkpoint: Path
    calls: HubCalls  # the end-of-training push
    repo_id: str = REPO_ID


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, shared_data) -> TrainedRun:
    from corewarding.config import load_config
    from corewarding.training.trainer import train

    out = tmp_path_factory.mktemp("card-run")
    cfg = load_config(
        "configs/tiny-cpu.yaml",
        [
            "method=co_rewarding_ii",
            "total_steps=2",
            "save_every=2",
            "val_every=2",
            f"output_dir={out}",
            "trainer.run_name=card",
            "trainer.push_to_hub=true",
            f"trainer.hub_repo_id={REPO_ID}",
            "trainer.hub_private=true",
        ],
    )
    with pytest.MonkeyPatch.context() as mp:
        calls = record_hub_calls(mp)
        result = train(cfg, progress=False)
    return TrainedRun(cfg, result.run_dir, result.run_dir / "checkpoint-2", calls)
