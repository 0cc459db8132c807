"""Load any causal LM and its tokenizer: hub id (for users), local directory, or ``builtin:`` name.

A directory holding a LoRA adapter in peft's format (or a checkpoint exported with
``model.lora.merge_on_export=false``, whose adapter is under ``adapter/``) loads as its base model with the
adapter merged in, so ``corewarding eval`` reads any training checkpoint.

Every way a model can fail to load is one :class:`~corewarding.errors.ConfigError` line naming the model and,
where one is at fault, the file, because transformers' own failures are misleading for the common mistakes:

* a local path that does not exist is passed on to the Hub client, which answers "Repo id must be in the
  form ..."; here a name that looks like a path (starts with ``/``, ``.`` or ``~``, or cannot be a Hub id) is
  "no such folder, and not a Hub model id", and a Hub id under ``HF_HUB_OFFLINE=1`` that is not in the local
  cache says so instead of "couldn't connect";
* a model folder without tokenizer files loads *silently* as an empty tokenizer (built from
  ``config.json``'s model type) that turns every prompt into zero tokens; it is refused, naming the files
  expected;
* a truncated or garbage weights file, or a damaged ``config.json`` / tokenizer JSON, surfaces as a bare
  ``SafetensorError`` or ``JSONDecodeError`` without a file name; when loading fails the folder's files are
  checked one by one so that the message names the one at fault.

The checks of file contents run only after a load has failed, so a sound model loads at the same speed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from corewarding.errors import ConfigError, CorewardingError
from corewarding.files import read_text
from corewarding.models.builtin import resolve_model_path

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# What a model folder must hold, as transformers looks for it (safetensors first, then pickled torch).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Files that describe a tokenizer: without any of them AutoTokenizer quietly builds an empty one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
_EXPECTED_MODEL = (
    "a transformers model folder (config.json, model.safetensors, tokenizer.json / tokenizer_config.json)"
)
_PROBE_TEXT = "1 + 1 = 2"  # any working tokenizer turns this into at least one token


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a damaged model file raises inside ``from_pretrained`` (torch, pickle, safetensors, json)."""
    errors: tuple[type[BaseException], ...] = (
        OSError,
        ValueError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
    )
    try:
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        pass
    return errors


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | str | None) -> torch.dtype:
    """``auto``/None → bf16 on a GPU that supports it, fp32 on CPU; strings like ``bf16`` accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device) if device is not None else None
        on_gpu = dev is not None and dev.type == "cuda"
        if on_gpu and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(
            f"model.dtype: unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)} or 'auto'"
        )
    return _DTYPES[dtype]


# ------------------------------------------------------------------------------------------ where it lives
def locate_model(name_or_path: str, what: str = "model") -> str:
    """Where transformers should load ``name_or_path`` from: an existing local folder (``~`` expanded), or
    a Hub id; a ``builtin:`` name is built first. Anything else is a :class:`ConfigError` saying why.

    ``what`` names the thing in the message (``model``, ``tokenizer of model``, a LoRA adapter's base).
    """
    path = resolve_model_path(name_or_path)
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    if local.exists():
        raise ConfigError(
            f"{what} {name_or_path!r} could not be loaded: {local} is a file; expected {_EXPECTED_MODEL}"
        )
    if _looks_like_path(path) or not _is_hub_id(path):
        raise ConfigError(
            f"{what} {name_or_path!r} could not be loaded: no such folder ({local.absolute()}), "
            "and not a Hub model id (namespace/name)"
        )
    if _hub_offline() and _hub_snapshot(path) is None:
        from huggingface_hub import constants

        raise ConfigError(
            f"{what} {name_or_path!r} could not be loaded: no local folder of that name, and Hub model "
            f"{path!r} is not in the Hub cache ({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1 forbids "
            f"downloading it; download it first (hf download {path}) or point to a local model folder"
        )
    return path


def _looks_like_path(name: str) -> bool:
    """A name the user meant as a path: ``/x``, ``./x``, ``../x``, ``~/x``, ``C:\\x``, ``a/b/c``.

    A Hub id is ``name`` or ``namespace/name``: one ``/`` at most and never a backslash (Windows' separator).
    """
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of Hub model ``repo_id`` (the one holding its ``config.json``), if any."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an unusual id or cache layout: treat as not cached
        return None
    return Path(cached).parent if isinstance(cached, str) else None


# ------------------------------------------------------------------------------------------------ tokenizer
def load_tokenizer(name_or_path: str):
    """The tokenizer of ``name_or_path`` (see :func:`locate_model`); its pad token defaults to EOS."""
    return _load_tokenizer(locate_model(name_or_path, "tokenizer of model"), name_or_path)


def _load_tokenizer(source: str, name: str):
    from transformers import AutoTokenizer

    folder = Path(source) if Path(source).is_dir() else None
    if folder is not None and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"tokenizer of model {name!r} could not be loaded: {folder} has no tokenizer files; expected "
            "tokenizer.json or tokenizer_config.json (with its vocabulary: tokenizer.json, vocab.json + "
            "merges.txt, tokenizer.model or vocab.txt)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except _load_errors() as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        place = folder or _hub_snapshot(source)
        found = _diagnose_tokenizer_folder(place) if place is not None else None
        raise ConfigError(
            f"tokenizer of model {name!r} could not be loaded: "
            + (
                found
                or f"{place or source}: {_one_line(err)}; expected tokenizer.json, or tokenizer_config.json "
                "with the vocabulary files of its tokenizer class"
            )
        ) from err
    if not tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]:
        raise ConfigError(
            f"tokenizer of model {name!r} could not be loaded: {source} gives an empty tokenizer (it turns "
            f"{_PROBE_TEXT!r} into no tokens); expected tokenizer.json or tokenizer_config.json with a "
            "vocabulary"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _diagnose_tokenizer_folder(folder: Path) -> str | None:
    """The first tokenizer JSON file of ``folder`` that is not UTF-8 JSON, as a message naming it."""
    for name in _TOKENIZER_JSON:
        problem = _json_file_problem(folder / name)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------------------------------------- model
def load_model_and_tokenizer(
    name_or_path: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
):
    """Return ``(model, tokenizer)``; the model is on ``device`` in ``dtype`` (see :func:`resolve_dtype`)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(
            f"device {str(device)!r} is not a torch device (cpu, cuda, cuda:1, mps ...)"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but CUDA is not available")
    torch_dtype = resolve_dtype(dtype, device)
    source = locate_model(name_or_path)
    adapter = adapter_dir(source)
    if adapter is not None:
        model, base_source, base_name = _load_merged_adapter(adapter, torch_dtype)
        model.to(device)
        has_tokenizer = any((Path(source) / f).is_file() for f in TOKENIZER_FILES)
        if has_tokenizer:
            return model, _load_tokenizer(source, name_or_path)
        return model, _load_tokenizer(base_source, base_name)
    model = _load_model(source, name_or_path, torch_dtype)
    model.to(device)
    return model, _load_tokenizer(source, name_or_path)


def _load_model(source: str, name: str, dtype: torch.dtype, what: str = "model"):
    """``AutoModelForCausalLM.from_pretrained(source)``, every failure one line naming the file at fault."""
    from transformers import AutoModelForCausalLM

    folder = Path(source) if Path(source).is_dir() else None
    if folder is not None:
        _check_model_files(folder, name, what)
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except _load_errors() as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        place = folder or _hub_snapshot(source)
        found = _diagnose_model_folder(place) if place is not None else None
        where = f"{place}" if place is not None else "no local folder of that name; from the Hub"
        raise ConfigError(
            f"{what} {name!r} could not be loaded: " + (found or f"{where}: {_one_line(err)}")
        ) from err


def _check_model_files(folder: Path, name: str, what: str) -> None:
    """Before loading: the files a model folder cannot do without (cheap existence checks only)."""
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{what} {name!r} could not be loaded: {folder} has no config.json; expected {_EXPECTED_MODEL}"
        )
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(
            f"{what} {name!r} could not be loaded: {folder} has no weights; expected one of "
            + ", ".join(WEIGHT_FILES)
        )


def _diagnose_model_folder(folder: Path) -> str | None:
    """After a failed load: the first file of ``folder`` that is damaged, as a message naming it."""
    problem = _json_file_problem(folder / "config.json", required=True)
    if problem is not None:
        return problem
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if not index.is_file():
            continue
        problem = _json_file_problem(index)
        if problem is not None:
            return problem
        weight_map = json.loads(index.read_bytes()).get("weight_map")
        if not isinstance(weight_map, dict):
            return f"{index}: no 'weight_map' object; expected the index of a sharded checkpoint"
        for shard in sorted({str(v) for v in weight_map.values()}):
            shard_path = folder / shard
            if not shard_path.is_file():
                return (
                    f"{shard_path}: no such file, though {index_name} lists it; expected every shard it names"
                )
            if shard.endswith(".safetensors"):
                problem = _safetensors_problem(shard_path)
                if problem is not None:
                    return problem
    single = folder / "model.safetensors"
    if single.is_file():
        return _safetensors_problem(single)
    return None


def _json_file_problem(path: Path, required: bool = False) -> str | None:
    """Why ``path`` is not a UTF-8 JSON object (``None`` when it is, or is absent and not ``required``)."""
    if not path.is_file():
        return f"{path}: no such file; expected a JSON object" if required else None
    try:
        value = json.loads(read_text(path, "JSON"))
    except CorewardingError as err:  # not UTF-8: names the line and byte
        return str(err)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        return f"{path}: not valid JSON ({err.msg} at {where}); expected a JSON object"
    except RecursionError:
        return f"{path}: JSON nested too deeply; expected a JSON object"
    if not isinstance(value, dict):
        return f"{path}: expected a JSON object, got {type(value).__name__}"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, from its header alone (``None`` when it looks whole).

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte range,
    then the data; a truncated copy is shorter than the header says, and garbage has no sensible header.
    """
    size = path.stat().st_size
    expected = "expected a complete safetensors file (re-copy or re-download it)"
    if size < 8:
        return f"{path}: {size} bytes, too short for a safetensors header; {expected}"
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len > size - 8:
            return (
                f"{path}: not a safetensors file or truncated (its header claims {header_len} bytes, the "
                f"file has {size}); {expected}"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
        ends = [int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return f"{path}: not a safetensors file (its header is not a tensor table); {expected}"
    needed = 8 + header_len + max(ends, default=0)
    if needed > size:
        return f"{path}: truncated ({size} bytes, its header describes {needed}); {expected}"
    if needed < size:
        return f"{path}: {size - needed} unexpected bytes after the tensors its header describes; {expected}"
    return None


def _one_line(err: BaseException, limit: int = 240) -> str:
    """``Type: message`` on one line (whitespace collapsed, cut at ``limit`` characters): enough to act
    on, and the CLI's error stays one line."""
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ----------------------------------------------------------------------------------------------------- LoRA
def adapter_dir(path: str) -> Path | None:
    """The LoRA adapter (peft format) ``path`` holds instead of a full model: ``path`` itself, or the
    ``adapter/`` of a checkpoint exported with ``model.lora.merge_on_export=false``; None for a full model."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").is_file():
        return None
    for candidate in (p, p / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def _load_merged_adapter(adapter: Path, dtype: torch.dtype) -> tuple[Any, str, str]:
    """Base model (named by the adapter's config) + the adapter, merged into a plain transformers model.

    Returns the model, where the base was loaded from and the base's name (for its tokenizer)."""
    from corewarding.training.lora import peft_quiet, require_peft

    peft = require_peft()
    config_file = adapter / "adapter_config.json"
    problem = _json_file_problem(config_file, required=True)
    if problem is not None:
        raise ConfigError(f"LoRA adapter {adapter} could not be loaded: {problem}")
    base_name = json.loads(config_file.read_bytes()).get("base_model_name_or_path")
    if not base_name or not isinstance(base_name, str):
        raise ConfigError(f"LoRA adapter {adapter}: adapter_config.json names no base_model_name_or_path")
    what = f"LoRA adapter {adapter}: base model"
    base_source = locate_model(base_name, what)
    base = _load_model(base_source, base_name, dtype, what)
    try:
        with peft_quiet():
            model = peft.PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except _load_errors() as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        weights = adapter / "adapter_model.safetensors"
        found = _safetensors_problem(weights) if weights.is_file() else None
        raise ConfigError(
            f"LoRA adapter {adapter} on base {base_name!r} could not be loaded: " + (found or _one_line(err))
        ) from err
    return model, base_source, base_name
