"""``corewarding push`` and ``trainer.push_to_hub``: the exact Hub calls (``HfApi`` mocked, no network) and
one clear error for a missing repository id, a folder that is no checkpoint and a refused token."""

from __future__ import annotations

import re
import shutil

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
    Response,
)
from huggingface_hub.utils import filter_repo_objects

from corewarding.cli import main
from corewarding.config import load_config
from corewarding.errors import ConfigError, HubError
from corewarding.reporting.push import check_checkpoint, push_checkpoint


def _http_error(cls, status: int, message: str):
    import httpx2  # what huggingface_hub's errors are built on (see huggingface_hub.errors)

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return cls(message, response=Response(status, request=request))


@pytest.fixture
def fake_checkpoint(tmp_path):
    """The files that make a folder an export (the mocked Hub never reads them)."""
    ckpt = tmp_path / "run" / "checkpoint-3"
    (ckpt / "state").mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"")
    (ckpt / "state" / "state.json").write_text('{"step": 3}')
    (ckpt / "COMPLETE").write_text("ok\n")
    return ckpt


# ---------------------------------------------------------------- the calls


@pytest.mark.slow
def test_push_command_makes_the_exact_calls(trained_run, tmp_path, hub_calls, capsys):
    ckpt = tmp_path / "card" / "checkpoint-2"
    shutil.copytree(trained_run.checkpoint, ckpt)
    calls = hub_calls
    code = main(["push", str(ckpt), "--repo-id", "other-org/pushed", "--private", "--token", "hf_test"])
    assert code == 0, capsys.readouterr().err
    assert calls.create_repo == [
        {
            "repo_id": "other-org/pushed",
            "private": True,
            "exist_ok": True,
            "repo_type": "model",
            "token": "hf_test",
        }
    ]
    (upload,) = calls.upload_folder
    assert upload["repo_id"] == "other-org/pushed" and upload["folder_path"] == str(ckpt)
    assert upload["repo_type"] == "model" and upload["token"] == "hf_test"
    # what huggingface_hub's own filter keeps: the export and its card, not the training state or teacher
    sent = set(filter_repo_objects(upload["files"], ignore_patterns=upload["ignore_patterns"]))
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= sent
    assert not [f for f in sent if f.startswith(("state/", "teacher/")) or f == "COMPLETE"], sorted(sent)
    # the card's loading snippet now names the repository it went to
    assert 'model_id = "other-org/pushed"' in (ckpt / "README.md").read_text()
    assert "pushed" in capsys.readouterr().out


@pytest.mark.slow
def test_push_to_hub_uploads_the_final_checkpoint_after_training(trained_run):
    calls = trained_run.calls
    assert calls.create_repo == [
        {
            "repo_id": trained_run.repo_id,
            "private": True,
            "exist_ok": True,
            "repo_type": "model",
            "token": None,
        }
    ]
    (upload,) = calls.upload_folder
    assert upload["repo_id"] == trained_run.repo_id and upload["folder_path"] == str(trained_run.checkpoint)
    assert "teacher/*" in upload["ignore_patterns"] and "state/*" in upload["ignore_patterns"]


def test_repo_id_defaults_to_the_runs_hub_repo_id(fake_checkpoint, hub_calls):
    cfg = load_config("configs/tiny-cpu.yaml", ["trainer.hub_repo_id=org/from-config"])
    from corewarding.config import save_config

    save_config(cfg, fake_checkpoint.parent / "config.yaml")
    calls = hub_calls
    assert main(["push", str(fake_checkpoint), "--include-teacher"]) == 0
    assert calls.create_repo[0]["repo_id"] == "org/from-config" and calls.create_repo[0]["private"] is False
    assert "teacher/*" not in calls.upload_folder[0]["ignore_patterns"]


# ---------------------------------------------------------------- clear errors


def test_missing_repo_id_is_a_clear_error(fake_checkpoint, hub_calls, capsys):
    calls = hub_calls
    assert main(["push", str(fake_checkpoint)]) == 2
    assert "--repo-id ORG/NAME is required" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no repository id"):
        push_checkpoint(fake_checkpoint, "")
    with pytest.raises(ConfigError, match="is not a Hub repository id"):
        push_checkpoint(fake_checkpoint, "not a repo id!")
    assert calls.create_repo == [] and calls.upload_folder == []


def test_push_to_hub_without_repo_id_fails_before_any_model_loads(capsys):
    # a model that does not exist: the config error must come first
    with pytest.raises(ConfigError, match=re.escape("trainer.push_to_hub=true needs trainer.hub_repo_id")):
        load_config("configs/tiny-cpu.yaml", ["push_to_hub=true", "model.name_or_path=/nonexistent/model"])
    with pytest.raises(ConfigError, match=re.escape("trainer.hub_repo_id='bad id!'")):
        load_config("configs/tiny-cpu.yaml", ["push_to_hub=true", "hub_repo_id=bad id!"])
    with pytest.raises(ConfigError, match=re.escape("trainer.save_every")):
        load_config("configs/tiny-cpu.yaml", ["push_to_hub=true", "hub_repo_id=org/x", "save_every=0"])
    assert main(["train", "configs/tiny-cpu.yaml", "push_to_hub=true", "--no-progress"]) == 2
    assert "needs trainer.hub_repo_id=ORG/NAME" in capsys.readouterr().err
    load_config("configs/tiny-cpu.yaml", ["push_to_hub=true", "hub_repo_id=org/x", "hub_private=true"])


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path, fake_checkpoint, hub_calls, capsys):
    calls = hub_calls
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=re.escape("not an exported checkpoint: config.json is missing")):
        check_checkpoint(empty)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"model weights \(\*.safetensors\) is missing"):
        check_checkpoint(no_weights)
    with pytest.raises(ConfigError, match="no such checkpoint folder"):
        check_checkpoint(tmp_path / "absent")
    (fake_checkpoint / "COMPLETE").unlink()
    with pytest.raises(ConfigError, match="incomplete checkpoint"):
        check_checkpoint(fake_checkpoint)
    (fake_checkpoint.parent / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="is a run directory, not a checkpoint"):
        check_checkpoint(fake_checkpoint.parent)
    assert main(["push", str(empty), "--repo-id", "org/x"]) == 2
    assert "is not an exported checkpoint" in capsys.readouterr().err
    assert calls.create_repo == []


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (lambda: _http_error(HfHubHTTPError, 401, "401 Unauthorized"), "the token was rejected"),
        (lambda: _http_error(HfHubHTTPError, 403, "403 Forbidden"), "may not write there"),
        (lambda: _http_error(RepositoryNotFoundError, 404, "404 Not Found"), "repository not found"),
        (lambda: LocalTokenNotFoundError("no token"), "no Hugging Face token found"),
    ],
    ids=["401", "403", "not-found", "no-token"],
)
def test_hub_failures_become_one_clear_error(fake_checkpoint, monkeypatch, capsys, raised, message):
    def create_repo(self, repo_id, **kwargs):
        raise raised()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    with pytest.raises(HubError, match=message) as err:
        push_checkpoint(fake_checkpoint, "org/model", token="hf_bad")
    assert "push to org/model" in str(err.value)
    assert isinstance(err.value.__cause__, type(raised()))
    assert main(["push", str(fake_checkpoint), "--repo-id", "org/model"]) == 2
    stderr = capsys.readouterr().err
    assert "corewarding push: error: push to org/model" in stderr and message in stderr


def test_upload_failure_after_the_repo_exists_is_clear_too(fake_checkpoint, hub_calls, monkeypatch):
    calls = hub_calls

    def upload_folder(self, **kwargs):
        raise _http_error(HfHubHTTPError, 403, "403 Forbidden")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    with pytest.raises(HubError, match="write access to 'org'"):
        push_checkpoint(fake_checkpoint, "org/model")
    assert calls.create_repo[0]["repo_id"] == "org/model"


@pytest.mark.skipif(not constants.HF_HUB_OFFLINE, reason="needs HF_HUB_OFFLINE=1 (no network is touched)")
def test_offline_mode_is_a_clear_error(fake_checkpoint):
    # the real HfApi: huggingface_hub refuses before any request when HF_HUB_OFFLINE is set
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        push_checkpoint(fake_checkpoint, "org/model", token="hf_x")


def test_an_adapter_only_lora_export_is_a_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoint-2"
    (ckpt / "adapter").mkdir(parents=True)
    (ckpt / "tokenizer.json").write_text("{}")
    (ckpt / "adapter" / "adapter_config.json").write_text("{}")
    (ckpt / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    assert check_checkpoint(ckpt) == ckpt
