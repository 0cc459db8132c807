"""Every way a model fails to load is one ConfigError line naming the model and the file at fault.

A real tiny Qwen3 (random weights, a BPE tokenizer trained here) is written once; each test damages a copy
of it the way a user's folder gets damaged: a path typed wrong, an offline Hub id, a tokenizer left behind,
an interrupted copy of the weights, garbage bytes, a config edited by hand.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from corewarding.errors import ConfigError, CorewardingError
from corewarding.models.loading import load_model_and_tokenizer, load_tokenizer, locate_model

TEXTS = [f"What is {a} + {b}? The answer is \\boxed{{{a + b}}}." for a in range(30) for b in range(5)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from corewarding.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), TEXTS, vocab_size=300, hidden_size=32)


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def _error(name: str, loader=load_model_and_tokenizer) -> str:
    with pytest.raises(ConfigError) as info:
        if loader is load_model_and_tokenizer:
            loader(name, device="cpu")
        else:
            loader(name)
    message = str(info.value)
    assert "\n" not in message, message  # the CLI prints it as one line
    assert "Repo id must" not in message, message  # the Hub client's answer to a local path
    return message


def test_a_sound_copy_loads(model_copy: Path) -> None:
    """The control: the checks below must not refuse a whole model folder."""
    model, tokenizer = load_model_and_tokenizer(str(model_copy), device="cpu")
    assert model.config.model_type == "qwen3"
    assert tokenizer("What is 1 + 2?")["input_ids"]


# ------------------------------------------------------------------------------------------- names and paths
@pytest.mark.parametrize("shape", ["absolute", "dot", "tilde", "deep"])
def test_missing_local_path_is_no_such_folder_not_a_repo_id_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    name = {
        "absolute": str(tmp_path / "checkpoints" / "final"),
        "dot": "./checkpoints/final",
        "tilde": "~/checkpoints/final",
        "deep": "runs/exp1/checkpoints",
    }[shape]
    message = _error(name)
    assert f"model {name!r} could not be loaded" in message
    assert "no such folder" in message and "not a Hub model id" in message
    assert str(tmp_path / "checkpoints" / "final") in message or "runs/exp1/checkpoints" in message
    assert "no such folder" in _error(name, load_tokenizer)


def test_tilde_is_expanded(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(model_copy.parent))
    assert locate_model("~/model") == str(model_copy)
    assert load_tokenizer("~/model")("1 + 1")["input_ids"]


def test_a_file_is_not_a_model_folder(model_copy: Path) -> None:
    message = _error(str(model_copy / "config.json"))
    assert "is a file" in message and "model folder" in message


def test_offline_hub_id_not_in_the_cache_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    message = _error("some-org/some-model")
    assert "not in the Hub cache" in message and "HF_HUB_OFFLINE=1" in message
    assert str(tmp_path / "hub") in message
    assert "couldn't connect" not in message.lower()


def test_offline_hub_id_in_the_cache_loads(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--some-org--tiny"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert locate_model("some-org/tiny") == "some-org/tiny"
    model, tokenizer = load_model_and_tokenizer("some-org/tiny", device="cpu")
    assert model.config.model_type == "qwen3" and tokenizer("1 + 1")["input_ids"]


# ------------------------------------------------------------------------------------------------- tokenizer
def test_folder_without_tokenizer_files_is_refused(model_copy: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (model_copy / name).unlink(missing_ok=True)
    for loader in (load_model_and_tokenizer, load_tokenizer):
        message = _error(str(model_copy), loader)
        assert f"{model_copy} has no tokenizer files" in message
        assert "tokenizer.json" in message and "tokenizer_config.json" in message


def test_tokenizer_config_without_vocabulary_is_one_line(model_copy: Path) -> None:
    (model_copy / "tokenizer.json").unlink()
    message = _error(str(model_copy))
    assert message.startswith(f"tokenizer of model {str(model_copy)!r} could not be loaded")
    assert str(model_copy) in message and "tokenizer.json" in message


def test_empty_tokenizer_is_refused(model_copy: Path) -> None:
    """A tokenizer.json with no vocabulary loads without complaint and encodes every prompt as nothing."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    empty = Tokenizer(models.BPE())
    empty.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    empty.save(str(model_copy / "tokenizer.json"))
    message = _error(str(model_copy), load_tokenizer)
    assert "empty tokenizer" in message and str(model_copy) in message


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (b"{not json", ["tokenizer.json", "not valid JSON"]),
        (b"\xff\xfe{}", ["tokenizer.json", "line 1", "not UTF-8"]),
    ],
)
def test_damaged_tokenizer_json_is_named(model_copy: Path, damage: bytes, fragments: list[str]) -> None:
    (model_copy / "tokenizer.json").write_bytes(damage)
    message = _error(str(model_copy))
    assert str(model_copy / "tokenizer.json") in message
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------------------------------- weights
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_truncate, "truncated"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not a safetensors file"),
        (lambda p: p.write_bytes(b""), "too short"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 100), "unexpected bytes"),
        (
            lambda p: p.write_bytes((20).to_bytes(8, "little") + b"{this is not json!!}" + b"\0" * 64),
            "not a safetensors",
        ),
    ],
    ids=["truncated", "garbage", "empty", "trailing-bytes", "bad-header"],
)
def test_damaged_weights_name_the_file(model_copy: Path, damage, fragment: str) -> None:
    weights = model_copy / "model.safetensors"
    damage(weights)
    message = _error(str(model_copy))
    assert f"model {str(model_copy)!r} could not be loaded" in message
    assert str(weights) in message and fragment in message, message


def test_missing_weights_and_missing_shard_are_named(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    weights.rename(model_copy / "model-00001-of-00002.safetensors")
    message = _error(str(model_copy))
    assert "has no weights" in message and "model.safetensors" in message

    from safetensors import safe_open

    with safe_open(str(model_copy / "model-00001-of-00002.safetensors"), "pt") as f:
        keys = list(f.keys())
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {k: shards[i % 2] for i, k in enumerate(keys)}}
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    message = _error(str(model_copy))
    assert str(model_copy / shards[1]) in message and "no such file" in message


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (None, ["has no config.json", "config.json, model.safetensors"]),
        (b"{not json", ["config.json: not valid JSON", "line 1, column 2"]),
        (b"\xff\xfe{}", ["config.json: line 1", "not UTF-8"]),
        (b"[1, 2]", ["config.json: expected a JSON object, got list"]),
    ],
    ids=["missing", "not-json", "not-utf8", "not-an-object"],
)
def test_damaged_config_is_named(model_copy: Path, damage: bytes | None, fragments: list[str]) -> None:
    config = model_copy / "config.json"
    if damage is None:
        config.unlink()
    else:
        config.write_bytes(damage)
    message = _error(str(model_copy))
    assert "could not be loaded" in message and str(model_copy) in message
    for fragment in fragments:
        assert fragment in message, message


def test_every_error_is_a_corewarding_error(model_copy: Path) -> None:
    """The CLI prints CorewardingError subclasses as one line and exits 2; nothing else escapes."""
    _truncate(model_copy / "model.safetensors")
    with pytest.raises(CorewardingError):
        load_model_and_tokenizer(str(model_copy), device="cpu")
