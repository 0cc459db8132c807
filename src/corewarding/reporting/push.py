"""Upload an exported checkpoint to the Hugging Face Hub.

``corewarding push CHECKPOINT --repo-id ORG/NAME [--private] [--token TOKEN]`` creates the model repository
if needed and uploads the checkpoint's Hugging Face export: the weights, the tokenizer and the model card.
The training state (``state/``) stays local; the Co-rewarding-II teacher (``teacher/``) goes up only with
``--include-teacher``. Without ``--repo-id`` the run's ``trainer.hub_repo_id`` (in its ``config.yaml``) is
used. The token is ``--token``, else ``HF_TOKEN`` or the one saved by ``hf auth login``.

``trainer.push_to_hub=true`` (with ``trainer.hub_repo_id``) does the same at the end of training.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from corewarding.errors import ConfigError, HubError

# never uploaded: the training state, the completion marker, leftovers of an interrupted save
IGNORE = ["state/*", "COMPLETE", "*.tmp", ".*"]
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.safetensors.index.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="an exported checkpoint folder (runs/<name>/checkpoint-<step>)")
    parser.add_argument(
        "--repo-id", default=None, help="ORG/NAME on the Hub (default: the run's trainer.hub_repo_id)"
    )
    parser.add_argument(
        "--private", action="store_true", help="create the repository private (an existing one keeps its own)"
    )
    parser.add_argument(
        "--token", default=None, help="Hugging Face token (default: HF_TOKEN or hf auth login)"
    )
    parser.add_argument(
        "--include-teacher", action="store_true", help="also upload teacher/ (Co-rewarding-II)"
    )
    parser.add_argument("--commit-message", default=None, help="commit message on the Hub")


def check_repo_id(repo_id: str, what: str = "--repo-id") -> str:
    """``repo_id`` when it is a valid Hub repository id (``ORG/NAME`` or ``NAME``), else a ConfigError."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not repo_id:
        raise ConfigError(
            f"{what}: no repository id given; expected ORG/NAME (e.g. my-org/qwen3-co-rewarding)"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(
            f"{what}={repo_id!r} is not a Hub repository id: expected ORG/NAME ({err})"
        ) from err
    return repo_id


def check_checkpoint(folder: str | Path) -> Path:
    """``folder`` when it holds a Hugging Face export (config.json and weights, or a PEFT adapter); else a
    ConfigError that says what it is instead."""
    from corewarding.training.checkpoint import COMPLETE, STATE, latest_checkpoint

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path}: no such checkpoint folder")
    if (path / "metrics.jsonl").is_file() or (path / "config.yaml").is_file():
        latest = latest_checkpoint(path)
        hint = f", e.g. {latest[1]}" if latest else " (it has none yet)"
        raise ConfigError(f"{path} is a run directory, not a checkpoint: push one of its checkpoints{hint}")
    # a LoRA run without merge_on_export: the adapter alone, in peft's format (at the top or in adapter/)
    adapter = any(
        (d / "adapter_config.json").is_file() and any(d.glob("adapter_model.*"))
        for d in (path, path / "adapter")
    )
    weights = any(any(path.glob(p)) for p in WEIGHT_PATTERNS)
    if not adapter and not ((path / "config.json").is_file() and weights):
        missing = "config.json" if not (path / "config.json").is_file() else "model weights (*.safetensors)"
        raise ConfigError(
            f"{path} is not an exported checkpoint: {missing} is missing (expected a Hugging Face export "
            "such as runs/<name>/checkpoint-<step>, written by corewarding train)"
        )
    if (path / STATE).is_dir() and not (path / COMPLETE).is_file():
        raise ConfigError(
            f"{path} is an incomplete checkpoint (no {COMPLETE} marker: its save was interrupted)"
        )
    return path


def _run_config(checkpoint: Path):
    """The resolved config of the run the checkpoint belongs to (``../config.yaml``), or None."""
    from corewarding.config import load_config

    path = checkpoint.parent / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except ConfigError:
        return None


def _hub_error(err: Exception, repo_id: str) -> HubError:
    """huggingface_hub's exception as one line with the repository and what to do."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    where = f"push to {repo_id}"
    if isinstance(err, LocalTokenNotFoundError):
        return HubError(
            f"{where}: no Hugging Face token found; pass --token, set HF_TOKEN, or run `hf auth login`"
        )
    if isinstance(err, OfflineModeIsEnabled):
        return HubError(f"{where}: HF_HUB_OFFLINE is set; unset it to reach the Hub")
    if isinstance(err, RepositoryNotFoundError):
        return HubError(
            f"{where}: repository not found or not accessible with this token; check the id, and that the "
            f"token may write to the namespace {repo_id.split('/')[0]!r} (a write token, a member of the org)"
        )
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        server = getattr(err, "server_message", None) or str(err).split("\n")[0]
        if status == 401:
            return HubError(
                f"{where}: the token was rejected (invalid or expired; HTTP 401); pass a valid --token"
            )
        if status == 403:
            return HubError(
                f"{where}: the token may not write there (HTTP 403); use a token with write access to "
                f"{repo_id.split('/')[0]!r} ({server})"
            )
        return HubError(f"{where}: the Hub answered HTTP {status}: {server}")
    return HubError(f"{where}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def push_checkpoint(
    checkpoint: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    include_teacher: bool = False,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Upload ``checkpoint``'s export to ``repo_id`` (created if absent); returns the commit URL.

    The card's loading snippet is pointed at ``repo_id`` first (a line of its ``README.md``). Failures of the
    Hub (token, permissions, network) become one ``HubError`` naming the repository and what to do.
    """
    from corewarding.reporting.model_card import CARD_FILE, set_model_id

    check_repo_id(repo_id)
    path = check_checkpoint(checkpoint)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    card = path / CARD_FILE
    if card.is_file():
        set_model_id(card, repo_id)
    ignore = [*IGNORE, *([] if include_teacher else ["teacher/*"])]
    message = commit_message or f"corewarding: upload {path.parent.name}/{path.name}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(path),
            repo_type="model",
            ignore_patterns=ignore,
            commit_message=message,
            token=token,
        )
    except Exception as err:
        if isinstance(err, HubError | ConfigError):
            raise
        raise _hub_error(err, repo_id) from err
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def run(args: argparse.Namespace) -> int:
    path = check_checkpoint(args.checkpoint)
    repo_id = args.repo_id
    if not repo_id:
        cfg = _run_config(path)
        repo_id = cfg.trainer.hub_repo_id if cfg is not None else ""
        if not repo_id:
            raise ConfigError(
                "--repo-id ORG/NAME is required (the run's config.yaml names no trainer.hub_repo_id)"
            )
    url = push_checkpoint(
        path,
        repo_id,
        private=args.private,
        token=args.token,
        include_teacher=args.include_teacher,
        commit_message=args.commit_message,
    )
    print(f"pushed {path} to https://huggingface.co/{repo_id} ({url})")
    return 0


def push_final_checkpoint(run_dir: Path, cfg) -> str:
    """``trainer.push_to_hub``: upload the run's latest checkpoint to ``trainer.hub_repo_id`` (main process,
    after training). A failure says that the run itself finished and how to push it later."""
    from corewarding.training.checkpoint import latest_checkpoint

    latest = latest_checkpoint(Path(run_dir))
    if latest is None:
        raise ConfigError(f"trainer.push_to_hub: {run_dir} holds no finished checkpoint to push")
    repo_id = cfg.trainer.hub_repo_id
    try:
        url = push_checkpoint(latest[1], repo_id, private=cfg.trainer.hub_private)
    except HubError as err:
        raise HubError(
            f"{err}. Training finished and {latest[1]} is saved: push it later with "
            f"`corewarding push {latest[1]} --repo-id {repo_id}`"
        ) from err
    print(f"pushed {latest[1]} to https://huggingface.co/{repo_id} ({url})")
    return url
