"""The one typed config schema for training, with YAML files and dotted command-line overrides.

Validation happens here, before anything loads: unknown keys, wrong types, unknown methods and
inconsistent combinations (``co_rewarding_i`` without rephrased data, say) fail with one clear message.
``method`` is a registered reward method or a plug-in's import path ``package.module:ClassName``: the one
list of methods is the registry in ``corewarding.rewards`` (``method_class``), which validation reads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from corewarding.answers.extraction import EXTRACTIONS
from corewarding.arguments import (
    FRACTION,
    FRACTION_BELOW_ONE,
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    OPEN_FRACTION,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TEMPERATURE,
    Number,
)
from corewarding.data.question import SYSTEM_PROMPT
from corewarding.errors import ConfigError

GT_GRADERS = ("math_verify", "string")  # the same as corewarding.rewards.matching.GT_GRADERS
STRATEGIES = ("auto", "none", "ddp", "fsdp2", "deepspeed")
DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


@dataclass
class LoRAConfig:
    """LoRA adapters through peft (``pip install 'corewarding[lora]'``); ``r: 0`` trains every weight."""

    r: int = 0  # adapter rank; 0 = off (full fine-tuning)
    alpha: float | None = None  # scaling numerator (scale = alpha / r); None = 2·r
    dropout: float = 0.0  # LoRA dropout on the adapter input, training forwards only
    # module names to adapt (peft's target_modules): every linear projection of attention and MLP of
    # Qwen/Llama-style decoders; ["all-linear"] = peft's every linear layer but the output head
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # checkpoints' Hugging Face export = base + adapter merged (W + s·B·A), loadable without peft; false: the
    # export is the adapter alone (checkpoint-N/adapter/, which corewarding eval merges when loading)
    merge_on_export: bool = True


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub id, local directory, or builtin:tiny-qwen3 / builtin:microworld
    # Storage of the trainable weights and the optimizer state. fp32 (also what ``auto`` means here): at the
    # paper's lr 3e-6 most AdamW updates are below bf16's resolution, so 16-bit storage barely trains.
    dtype: str = "float32"
    # Precision of the forward and backward passes: auto = bf16 on a GPU that supports it, else fp32.
    # bf16 on CPU works too (CPU autocast). Under FSDP2 it is the all-gather dtype (gradients reduce in fp32).
    compute_dtype: str = "auto"
    gradient_checkpointing: bool = False
    # LoRA: only adapters train; the frozen base is held in compute_dtype, the adapters in ``dtype``
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class DataConfig:
    train: str = MISSING  # original view: verl parquet, JSONL, or HF dataset
    train_rephrased: str | None = None  # rephrased view, row-aligned with ``train``
    view: str = "original"  # original | rephrased: which view single-view methods train on
    val: str | None = None
    val_limit: int | None = None
    limit: int | None = None
    max_prompt_length: int = 512
    system_prompt: str = SYSTEM_PROMPT
    shuffle: bool = True


@dataclass
class RewardConfig:
    """How rollouts are read and rewarded. The defaults are the project's (improved) rules; the paper's
    released code is reproduced by ``extraction=boxed exact_vote=true gt_grader=string`` (configs/paper/).
    Each method takes the options it uses (see ``corewarding.rewards``)."""

    # lenient: last box, else "#### X", else "The answer is X"; boxed: the paper's last-\boxed{}-only rule
    # (no box, no answer: it neither votes nor earns reward)
    extraction: str = "lenient"
    exact_vote: bool = False  # the paper's exact-string voting and matching instead of equivalence classes
    # gt baseline: math_verify = equivalence with the gold; string = the paper's Hendrycks-style normalised
    # exact match (corewarding.answers.hendrycks)
    gt_grader: str = "math_verify"


@dataclass
class RolloutConfig:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 3072
    engine: str = "hf"
    batch_size: int = 64  # sequences per generate() call
    # vLLM only: its share of GPU memory. It shares the GPU with the policy's training, so the default is low.
    gpu_memory_utilization: float = 0.4
    # vLLM only: release its weights and KV cache while the policy updates (vLLM's sleep mode), when the
    # installed vLLM offers it
    sleep_between_steps: bool = True


@dataclass
class GRPOConfig:
    clip_ratio: float = 0.2
    kl_coef: float = 0.005  # 0 disables the reference model entirely
    loss_agg: str = "token-mean"
    adv_eps: float = 1e-6
    updates_per_step: int = 1  # optimizer steps per rollout batch (mini-batches)


@dataclass
class OptimConfig:
    lr: float = 3e-6
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"  # cosine | constant
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    micro_batch_size: int = 8  # sequences per forward/backward; gradients accumulate over the rest


@dataclass
class TeacherConfig:
    ema: bool = True  # false freezes the teacher (the paper's ablation)
    update_interval: int = 1
    a_start: float = 0.01
    a_end: float = 0.0001
    n: int = 8  # G~: teacher rollouts per question
    view: str = "original"  # original | rephrased


@dataclass
class ValidationConfig:
    n: int = 4
    temperature: float = 0.8
    max_new_tokens: int | None = None  # None = rollout.max_new_tokens
    before_training: bool = True


@dataclass
class TrainerConfig:
    total_steps: int = 100
    batch_questions: int = 128
    val_every: int = 10
    save_every: int = 10
    keep_checkpoints: int = 2
    output_dir: str = "runs"
    run_name: str | None = None  # default: the method name
    seed: int = 42
    # metrics.jsonl is always written; + tensorboard, wandb, trackio, mlflow (through accelerate's trackers)
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])
    wandb_project: str = "corewarding"  # the project name of every tracker (wandb, trackio, mlflow, ...)
    sample_rollouts: int = 4  # rollouts per step written to rollouts/step-*.jsonl
    # dtype of the Hugging Face export in each checkpoint (the training state beside it is always full
    # precision): bf16 as released models are; the CPU micro-world keeps float32
    export_dtype: str = "bfloat16"
    # upload the final checkpoint (its Hugging Face export and model card) to hub_repo_id (ORG/NAME) at the end
    # of training, as ``corewarding push`` does; hub_private: a repository the push creates is private
    push_to_hub: bool = False
    hub_repo_id: str = ""
    hub_private: bool = False
    # resume=true refuses settings that change what the run's steps mean (optim.lr, rollout.n, method, model,
    # data, seed, ...) so config.yaml keeps telling what the earlier steps ran with; true continues with the
    # new values anyway. Either way the old config is kept (config-step-N.yaml, config_history.jsonl).
    # Always allowed: total_steps, val_every, save_every, keep_checkpoints, loggers, output_dir, ...
    allow_config_changes: bool = False


@dataclass
class DistributedConfig:
    # auto = what the accelerate launch says (an FSDP launch config → fsdp2, DeepSpeed → deepspeed, several
    # processes → ddp, else none). fsdp2 is applied by corewarding itself with torch's ``fully_shard``, so it
    # also runs on CPU processes over gloo, where accelerate's FSDP plugin falls back to DDP.
    strategy: str = "auto"  # auto | none | ddp | fsdp2 | deepspeed
    reshard_after_forward: bool = True  # FSDP2: free gathered weights after each forward (ZeRO-3 style)


@dataclass
class Config:
    method: str = MISSING  # a registered reward method, or a plug-in: package.module:ClassName
    # the method's own options beyond reward.* (a plug-in's, say: method_options.length_penalty=0.2), checked
    # against its ``option_defaults``
    method_options: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    resume: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.output_dir) / (self.trainer.run_name or _method_run_name(self.method))


@dataclass(frozen=True)
class NumberList:
    """The domain of a list-of-numbers field: exactly ``length`` values, each in ``each`` (AdamW's betas)."""

    each: Number
    length: int

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, list | tuple)
            and len(value) == self.length
            and all(map(self.each.accepts, value))
        )

    @property
    def expected(self) -> str:
        return f"a list of {self.length} numbers, each {self.each.expected}"


def _optional(domain: Number, none_means: str) -> Number:
    """``domain`` for a field that may also be null: the message says what null means."""
    return dataclasses.replace(domain, describe=f"{domain.expected}, or null for {none_means}")


# Every numeric field of ``Config`` and the values it accepts, checked by ``validate_config`` in one loop:
# one place to read a field's domain, and one message shape (``key=value: expected ...``) for all of them.
# NaN and ±inf are refused for every float (``Number.accepts``). A null is refused by the schema itself
# unless the field's type is ``X | None``, where it means what the domain's text says. A numeric field
# added to a dataclass above without an entry here fails tests/test_cli_bad_values.py.
FIELD_DOMAINS: dict[str, Number | NumberList] = {
    "model.lora.r": dataclasses.replace(
        NONNEGATIVE_INT, describe="a rank ≥ 0 (0 = no LoRA, full fine-tuning)"
    ),
    "model.lora.alpha": _optional(POSITIVE_FLOAT, "2·r"),
    "model.lora.dropout": FRACTION_BELOW_ONE,
    "data.val_limit": _optional(POSITIVE_INT, "every validation question"),
    "data.limit": _optional(POSITIVE_INT, "every training question"),
    "data.max_prompt_length": POSITIVE_INT,
    "rollout.n": Number(int, low=2, describe="an integer ≥ 2 (GRPO normalises rewards within a group)"),
    # A sampled rollout is the point of GRPO: greedy rollouts (temperature 0) are identical within a group, so
    # every group's rewards are equal and its advantages zero, and the log-probs are divided by the temperature.
    "rollout.temperature": Number(
        float,
        low=0,
        low_open=True,
        describe="a temperature > 0: GRPO needs sampled rollouts (greedy rollouts make every group constant, "
        "zero advantage, and the log-probs divide by the temperature)",
    ),
    "rollout.top_p": OPEN_FRACTION,
    "rollout.top_k": dataclasses.replace(NONNEGATIVE_INT, describe="an integer ≥ 0 (0 = no top-k)"),
    "rollout.max_new_tokens": POSITIVE_INT,
    "rollout.batch_size": POSITIVE_INT,
    "rollout.gpu_memory_utilization": OPEN_FRACTION,
    "grpo.clip_ratio": POSITIVE_FLOAT,
    "grpo.kl_coef": dataclasses.replace(NONNEGATIVE_FLOAT, describe="a number ≥ 0 (0 = no reference model)"),
    "grpo.adv_eps": POSITIVE_FLOAT,
    "grpo.updates_per_step": POSITIVE_INT,
    "optim.lr": POSITIVE_FLOAT,
    "optim.weight_decay": NONNEGATIVE_FLOAT,
    "optim.betas": NumberList(FRACTION_BELOW_ONE, 2),
    "optim.warmup_ratio": FRACTION_BELOW_ONE,
    "optim.min_lr_ratio": FRACTION,
    "optim.grad_clip": POSITIVE_FLOAT,
    "optim.micro_batch_size": POSITIVE_INT,
    "teacher.update_interval": POSITIVE_INT,
    # 0 would freeze the teacher: that ablation is teacher.ema=false, so an EMA rate must move it
    "teacher.a_start": OPEN_FRACTION,
    "teacher.a_end": OPEN_FRACTION,
    "teacher.n": POSITIVE_INT,
    "validation.n": POSITIVE_INT,
    "validation.temperature": TEMPERATURE,  # 0 = greedy: both engines support it for evaluation
    "validation.max_new_tokens": _optional(POSITIVE_INT, "rollout.max_new_tokens"),
    "trainer.total_steps": POSITIVE_INT,
    "trainer.batch_questions": POSITIVE_INT,
    "trainer.val_every": dataclasses.replace(NONNEGATIVE_INT, describe="an interval ≥ 0 (0 = never)"),
    "trainer.save_every": dataclasses.replace(NONNEGATIVE_INT, describe="an interval ≥ 0 (0 = never)"),
    "trainer.keep_checkpoints": dataclasses.replace(NONNEGATIVE_INT, describe="a count ≥ 0 (0 = keep all)"),
    "trainer.seed": SEED,
    "trainer.sample_rollouts": NONNEGATIVE_INT,
}


def _field_value(cfg: Config, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _shown(value: Any) -> str:
    """A value as the message shows it: ``nan`` and ``inf`` as typed, not ``float('nan')``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return repr(value)


def _method_run_name(method: str) -> str:
    """The default run name: the method's name (a plug-in's class attribute ``name``, not its import path)."""
    if ":" not in method:
        return method
    from corewarding.rewards import method_class

    return method_class(method).name


def _field_index() -> dict[str, list[str]]:
    """Leaf field name -> dotted paths, for short overrides like ``total_steps=2``."""
    index: dict[str, list[str]] = {}
    for section in dataclasses.fields(Config):
        factory = section.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            for leaf in dataclasses.fields(factory):
                index.setdefault(leaf.name, []).append(f"{section.name}.{leaf.name}")
        else:
            index.setdefault(section.name, []).append(section.name)
    return index


def _expand_key(key: str) -> str:
    if "." in key:
        return key
    paths = _field_index().get(key)
    if not paths:
        raise ConfigError(f"override {key!r}: unknown key (use a dotted path like trainer.total_steps)")
    if len(paths) > 1:
        raise ConfigError(f"override {key!r} is ambiguous: say one of {paths}")
    return paths[0]


def _load_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[Any]:
    """Load ``path`` and, first, the file its ``base:`` key names (relative to it), recursively."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path}: 'base' chain loops back to itself")
    if not path.is_file():
        where = f" (named as base by {seen[-1]})" if seen else ""
        raise ConfigError(f"config file {path} not found{where}")
    layer = _load_mapping(path)
    base = layer.pop("base", None)
    if base is None:
        return [layer]
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: 'base' must be a file name, got {base!r}")
    return [*_load_yaml_chain(path.parent / base, (*seen, path.resolve())), layer]


def _load_mapping(path: Path) -> DictConfig:
    """One config file as a mapping, or a ConfigError naming the file and what its top level is instead.

    The top level is checked before OmegaConf reads it: OmegaConf turns a list into a ``ListConfig`` that
    fails later with a traceback, and a bare word into a mapping with that word as its only key. An empty
    file (or one of only comments, or ``null``) is refused too: it sets nothing, so it is almost always the
    wrong file or one cut short, and "missing mandatory value: method" would not say so.
    """
    import yaml

    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        layer = OmegaConf.load(path) if isinstance(node, yaml.MappingNode) else None
    except (UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"config file {path}: cannot read it as UTF-8 text ({err})") from None
    except Exception as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None)
        if mark is not None and problem:
            detail = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        else:
            detail = " ".join(str(err).split())  # one line, whatever the library wrote
        raise ConfigError(f"config file {path}: not valid YAML ({detail})") from None
    expected = "expected a mapping of config keys (method: ..., model: ..., data: ...)"
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
        raise ConfigError(f"config file {path} is empty; {expected}")
    if not isinstance(layer, DictConfig):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the single value {node.value!r}"
        raise ConfigError(f"config file {path}: its top level is {kind}; {expected}")
    return layer


def _field_of(err: OmegaConfBaseException) -> str:
    """The dotted field an OmegaConf error is about (``optim.betas[0]`` -> ``optim.betas``), or ""."""
    key = str(getattr(err, "full_key", None) or "")
    return key.split("[", 1)[0]


def _invalid(err: OmegaConfBaseException, where: str, show_key: bool = True) -> ConfigError:
    """One line from an OmegaConf error: where the value came from, OmegaConf's first line, the key, and
    for a numeric field what it accepts (OmegaConf only says "could not be converted to Integer")."""
    msg = str(err).split("\n")[0].rstrip(". ")
    key = getattr(err, "full_key", None)
    text = f"{where}: {msg}" + (f" (key: {key})" if key and show_key else "")
    domain = FIELD_DOMAINS.get(_field_of(err))
    if domain is not None:
        text += f"; expected {domain.expected}"
    return ConfigError(text)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Merge the schema defaults, a YAML file and ``key=value`` overrides; validate; return a ``Config``."""
    schema = OmegaConf.structured(Config)
    layers = [schema]
    if path is not None:
        p = Path(path)
        layers.extend(_load_yaml_chain(p))
    dotlist = []
    given: dict[str, str] = {}  # dotted key -> the override as typed, for messages
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        dotted = _expand_key(key.strip())
        dotlist.append(f"{dotted}={value}")
        given[dotted] = item
    # The file and the overrides are merged in two steps so that a value the schema refuses is blamed on
    # where it came from: the file, or the override as the user typed it.
    source = f" in {path}" if path else ""
    try:
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException as err:
        raise _invalid(err, f"invalid config{source}") from err
    try:
        if dotlist:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as err:
        field = _field_of(err)
        where = f"override {given[field]}" if field in given else "invalid override"
        # the full key only where the override did not spell it (``total_steps=abc``)
        typed = given.get(field, "").split("=", 1)[0].strip()
        raise _invalid(err, where, show_key=typed != field) from err
    try:
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise _invalid(err, f"invalid config{source}") from err
    validate_config(cfg)
    return cfg


def validate_config(cfg: Config) -> None:
    """The checks the schema's types cannot express: each numeric field's domain (``FIELD_DOMAINS``), the
    names a string field accepts, and the combinations of fields that cannot work together."""

    def bad(key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"{key}={_shown(value)}: expected {expected}")

    for key, domain in FIELD_DOMAINS.items():
        value = _field_value(cfg, key)
        # null only gets here where the schema allows it (``X | None``); the domain's text says what it means
        if value is not None and not domain.accepts(value):
            bad(key, value, domain.expected)

    from corewarding.rewards import method_class

    method = method_class(cfg.method)  # ConfigError naming the value and what was expected
    if cfg.data.view not in ("original", "rephrased"):
        bad("data.view", cfg.data.view, "original or rephrased")
    if cfg.teacher.view not in ("original", "rephrased"):
        bad("teacher.view", cfg.teacher.view, "original or rephrased")
    needs_rephrased = (
        method.needs_rephrased
        or cfg.data.view == "rephrased"
        or (method.needs_teacher and cfg.teacher.view == "rephrased")
    )
    if needs_rephrased and not cfg.data.train_rephrased:
        why = cfg.method if method.needs_rephrased else "the rephrased view"
        raise ConfigError(f"{why} needs rephrased data: set data.train_rephrased to the rephrased file")
    if cfg.reward.extraction not in EXTRACTIONS:
        bad("reward.extraction", cfg.reward.extraction, " or ".join(EXTRACTIONS))
    if cfg.reward.gt_grader not in GT_GRADERS:
        bad("reward.gt_grader", cfg.reward.gt_grader, " or ".join(GT_GRADERS))
    shared = {f.name for f in dataclasses.fields(RewardConfig)}
    for key, value in cfg.method_options.items():
        if key in shared:
            bad(f"method_options.{key}", value, f"to be set as reward.{key} (a key of reward)")
        if key not in method.option_defaults:
            accepted = ", ".join(sorted(set(method.option_defaults) - shared)) or "none"
            bad(f"method_options.{key}", value, f"an option of method {cfg.method} (its options: {accepted})")
    if cfg.grpo.loss_agg not in ("token-mean", "seq-mean-token-mean"):
        bad("grpo.loss_agg", cfg.grpo.loss_agg, "token-mean or seq-mean-token-mean")
    if cfg.optim.schedule not in ("cosine", "constant"):
        bad("optim.schedule", cfg.optim.schedule, "cosine or constant")
    if cfg.rollout.engine not in ("hf", "vllm"):
        bad("rollout.engine", cfg.rollout.engine, "hf or vllm")
    if cfg.distributed.strategy not in STRATEGIES:
        bad("distributed.strategy", cfg.distributed.strategy, f"one of {', '.join(STRATEGIES)}")
    for key, value in (
        ("model.dtype", cfg.model.dtype),
        ("model.compute_dtype", cfg.model.compute_dtype),
        ("trainer.export_dtype", cfg.trainer.export_dtype),
    ):
        if value not in DTYPE_NAMES:
            bad(key, value, f"one of {', '.join(DTYPE_NAMES)}")
    from corewarding.training.run_log import LOGGERS

    if set(cfg.trainer.loggers) - set(LOGGERS):
        bad("trainer.loggers", cfg.trainer.loggers, f"a list drawn from {', '.join(LOGGERS)}")
    if cfg.trainer.batch_questions % cfg.grpo.updates_per_step:
        bad("grpo.updates_per_step", cfg.grpo.updates_per_step, "a divisor of trainer.batch_questions")
    _validate_lora(cfg, bad)
    if cfg.trainer.push_to_hub:
        from corewarding.reporting.push import check_repo_id

        if not cfg.trainer.hub_repo_id:
            raise ConfigError(
                "trainer.push_to_hub=true needs trainer.hub_repo_id=ORG/NAME, the Hub repository to upload to"
            )
        check_repo_id(cfg.trainer.hub_repo_id, "trainer.hub_repo_id")
        if not cfg.trainer.save_every:
            bad("trainer.save_every", 0, "a positive interval with push_to_hub (it pushes a checkpoint)")


def _validate_lora(cfg: Config, bad) -> None:
    """LoRA's non-numeric settings (its numbers are in ``FIELD_DOMAINS``), checked only when LoRA is on."""
    lora = cfg.model.lora
    if lora.r == 0:
        return
    targets = list(lora.target_modules)
    if not targets or any(not isinstance(t, str) or not t.strip() for t in targets):
        bad(
            "model.lora.target_modules",
            targets,
            'a non-empty list of module names, e.g. [q_proj, v_proj] or ["all-linear"]',
        )
    if "all-linear" in targets and len(targets) > 1:
        bad("model.lora.target_modules", targets, '["all-linear"] alone, or a list of module names')
    if cfg.distributed.strategy in ("fsdp2", "deepspeed"):
        raise ConfigError(
            f"model.lora.r={lora.r} is not supported with distributed.strategy={cfg.distributed.strategy}: LoRA "
            "runs in one process or under DDP (distributed.strategy=ddp or auto with a DDP launch), where each "
            "GPU holds the frozen base in the compute dtype and only the adapters train"
        )


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically, through the one file policy of corewarding.files)."""
    from corewarding.files import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
