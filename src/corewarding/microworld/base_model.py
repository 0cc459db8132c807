"""The micro-world's base model: a tiny Qwen3 pretrained on worked solutions, some of them wrong.

Why imperfect on purpose: Co-rewarding only helps a model that already solves a problem *sometimes* and
whose mistakes disagree with each other, so the majority answer is right more often than one sample.
Base LLMs are like that; a model trained only on clean solutions would either be perfect or useless. So
a share of the pretraining solutions carry one random mistake carried through to a wrong answer, or end
without a box. Sampling at temperature 1.0 then reproduces that imperfection with wrong answers spread
over many values, the regime in which label-free GRPO has something to sharpen.

Pretraining problems are drawn fresh and kept disjoint (by underlying problem) from every split of the
world, so held-out accuracy measures generalisation. The result is an ordinary Hugging Face model
directory (``save_pretrained`` of model and tokenizer), cached under a hash of everything that determines
it, so ``AutoModelForCausalLM.from_pretrained(path)`` works and later runs reuse it.

The default base (seed 0, default world and recipe) also ships with the package, in ``shipped_base/``,
because pretraining it is the longest part of a first ``corewarding demo`` (2 minutes on a fast 2-core
machine, over 4 on a slow one). ``corewarding build-base`` (``make base``) rebuilds it with this module's
own code; its log records the fingerprint it was built for, and a shipped base whose fingerprint no longer
matches the code is never used. Pretraining is deterministic on a given machine, not across machines
(float reductions differ), so a rebuild elsewhere gives a comparable model, not the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corewarding.data.question import Question
from corewarding.microworld.problems import Problem, generate_problems, solution_text
from corewarding.microworld.world import MicroWorld, WorldConfig, build_world

FORMAT_VERSION = 3  # bump when the pretraining recipe changes in a way configs do not capture
LOG_FILE = "pretrain_log.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Model shape and the supervised pretraining recipe.

    ``corrupt_fraction`` of solutions carry one wrong intermediate result or operand; a further
    ``nobox_fraction`` stop before stating any answer, and ``plain_answer_fraction`` state the right
    answer as plain text (``The answer is 9.``) instead of in ``\\boxed{}``: the base model then sometimes
    answers without a box, which the project's lenient extraction reads and the paper's box-only rule
    does not, so the two reward modes (``compare --reward-mode both``) really differ. ``steps`` (not wall time) bounds training so the same
    config always gives the same model.

    The defaults (about 0.8M parameters, 800 steps of 32 examples: 132 s on an idle 2-core AMD EPYC)
    give, for pretraining seed 0 on 2 threads, held-out avg@8 46.2% and maj@8 74.2% at temperature 1.0
    (the shipped base; 7.6% of its samples answer in plain text only): majority voting far above a
    single sample, and mistakes spread over many wrong answers. Before plain answers were added (recipe
    version 2) the same recipe measured 49.5% / 80.5% on one machine, 54.0% / 87.5% on another, and
    52% / 87% pretrained on 1 thread: float reductions differ. The figures that follow are version 2's.
    Fewer steps
    do not make a usefully weaker base: at 600 steps (avg@8 40%, maj@8 69%) label-free training gained
    18 points and stalled near that maj@8, and at 450 (validation avg@4 22%, maj@4 31%) the mistakes are
    systematic and label-free training drifted onto them. At 600 steps the outcome was also
    seed-sensitive (seed 1: avg@8 18%, maj@8 29%).

    The model's hard part is learning to copy the question's numbers into its equations, which appears
    abruptly after a few hundred steps; ``init_std`` 0.05 (instead of the 0.02 meant for wide models)
    brings that moment forward a lot for a model this narrow, and a higher learning rate (5e-3, 1e-2)
    delayed it.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_problems: int = 20000
    corrupt_fraction: float = 0.3
    nobox_fraction: float = 0.1
    plain_answer_fraction: float = 0.1
    init_std: float = 0.05
    adam_beta2: float = 0.999

    def __post_init__(self) -> None:
        if not 0 <= self.corrupt_fraction + self.nobox_fraction + self.plain_answer_fraction <= 1:
            raise ValueError(
                "corrupt_fraction + nobox_fraction + plain_answer_fraction must be within [0, 1]"
            )
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")


def default_cache_dir() -> Path:
    """``$COREWARDING_CACHE/microworld`` (default ``~/.cache/corewarding/microworld``)."""
    root = os.environ.get("COREWARDING_CACHE", str(Path.home() / ".cache" / "corewarding"))
    return Path(root).expanduser() / "microworld"


def model_fingerprint(world: MicroWorld, config: PretrainConfig, seed: int, tokenizer: Any = None) -> str:
    """Hash of everything that determines the pretrained model (the cache directory's name).

    Besides the configs it hashes the tokenizer's vocabulary and a sample of the generated problems, so
    a change to the templates or the vocabulary (code, not config) never reuses a stale cached model.
    """
    from corewarding.microworld.tokenizer import build_tokenizer

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(world)
    sample = [[*p.views, p.solution] for problems in world.problems.values() for p in problems[:20]]
    blob = json.dumps(
        {
            "world": asdict(world.config),
            "pretrain": asdict(config),
            "seed": seed,
            "format": FORMAT_VERSION,
            "vocab": sorted(tokenizer.get_vocab().items()),
            "sample": sample,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretraining_examples(
    world: MicroWorld, config: PretrainConfig, seed: int
) -> list[tuple[list[dict[str, str]], str]]:
    """(chat messages, target solution) pairs on fresh problems disjoint from every split of ``world``.

    Each problem is shown in a random one of its views, so the model learns every scenario's wording.
    """
    rng = random.Random(seed * 1_000_003 + 17)
    problems: list[Problem] = generate_problems(
        config.n_problems, rng.randrange(2**31), exclude=world.keys(), **world.config.problem_kwargs()
    )
    examples = []
    for problem in problems:
        text = rng.choice(problem.views)
        messages = Question.from_text("pretrain", text, system_prompt=world.config.system_prompt).messages
        u = rng.random()
        if u < config.corrupt_fraction:
            target = solution_text(problem, corrupt=True, rng=rng)
        elif u < config.corrupt_fraction + config.nobox_fraction:
            target = solution_text(problem, corrupt=False, rng=rng, boxed=False)
        elif u < config.corrupt_fraction + config.nobox_fraction + config.plain_answer_fraction:
            target = solution_text(problem, plain_answer=True)
        else:
            target = problem.solution
        examples.append((messages, target))
    return examples


def build_model(tokenizer: Any, config: PretrainConfig, seed: int) -> Any:
    """A freshly initialised ``Qwen3ForCausalLM`` of the configured shape (tied embeddings)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model_config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.hidden_size // config.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=config.init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(model_config)


def _encode(tokenizer: Any, examples: list[tuple[list[dict[str, str]], str]]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + solution + eos, and the prompt length (prompt tokens carry no loss)."""
    prompts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in examples
    ]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer([t for _, t in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + t + [eos], len(p)) for p, t in zip(prompt_ids, target_ids, strict=True)]


def _batch(encoded: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = input_ids[row, n_prompt : len(ids)]
    return input_ids, attention, labels


def _shuffled_batches(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless random batches of example indices; each pass sees every example once.

    Batches mix lengths on purpose: grouping alike lengths to save padding made the base model markedly
    worse at the same step count (held-out avg@8 11% instead of 43% for seed 0).
    """
    while True:
        order = list(range(n))
        rng.shuffle(order)
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        rng.shuffle(batches)
        yield from (b for b in batches if len(b) == batch_size)


def _lr_factor(step: int, config: PretrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train_base_model(
    model: Any,
    tokenizer: Any,
    world: MicroWorld,
    config: PretrainConfig,
    seed: int = 0,
    progress: bool = True,
    on_step: Any = None,
) -> list[float]:
    """The supervised pretraining loop (in place, on the model's device); returns the per-step losses.

    ``on_step(step, loss)`` is called after each update (1-based step), e.g. to evaluate mid-way.
    """
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    encoded = _encode(tokenizer, pretraining_examples(world, config, seed))
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2), weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    batches = _shuffled_batches(len(encoded), config.batch_size, random.Random(seed))
    losses: list[float] = []
    bar = tqdm(
        range(config.steps), desc="pretraining micro-world base model", disable=not progress, unit="step"
    )
    for step in bar:
        batch_idx = next(batches)
        input_ids, attention, labels = _batch([encoded[i] for i in batch_idx], tokenizer.pad_token_id)
        loss = model(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), labels=labels.to(device)
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(step + 1, losses[-1])
    return losses


def pretrain_base_model(
    world: MicroWorld,
    out_dir: str | Path,
    config: PretrainConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = True,
) -> Path:
    """Pretrain a base model on ``world``'s task and save it (model + tokenizer) to ``out_dir``.

    Seeded and deterministic on a given machine. ``out_dir/pretrain_log.json`` records the configs, the
    loss curve, the parameter count and the wall time. The directory is written whole or not at all;
    ``overwrite=False`` keeps a complete model that another process put at ``out_dir`` meanwhile.
    """
    from transformers import GenerationConfig

    from corewarding.microworld.tokenizer import build_tokenizer

    config = config or PretrainConfig()
    out = Path(out_dir)
    started = time.perf_counter()
    tokenizer = build_tokenizer(world)
    model = build_model(tokenizer, config, seed)
    n_params = sum(p.numel() for p in model.parameters())
    losses = train_base_model(model, tokenizer, world, config, seed, progress=progress)
    seconds = time.perf_counter() - started

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=64,
    )
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    log = {
        "fingerprint": model_fingerprint(world, config, seed, tokenizer),
        "machine": _machine(),
        "world": asdict(world.config),
        "pretrain": asdict(config),
        "seed": seed,
        "format": FORMAT_VERSION,
        "parameters": n_params,
        "seconds": round(seconds, 2),
        "losses": [round(x, 5) for x in losses],
    }
    (tmp / LOG_FILE).write_text(json.dumps(log, indent=1))
    _install(tmp, out, overwrite)
    return out


def _machine() -> dict[str, Any]:
    """Where a base model was pretrained: its figures (seconds) are this machine's."""
    import platform

    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished directory into place; without ``overwrite`` a complete one already there wins.

    A directory rename is atomic but not durable by itself: its files are fsynced first and the parent
    folder after (``corewarding.files``' rule for whole files, applied to a folder), so a crash just after
    the rename cannot leave a published model whose log says "complete" over truncated weights.
    """
    from corewarding.files import fsync_dir

    for file in tmp.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(tmp)
    if out.exists() and (overwrite or not (out / LOG_FILE).is_file()):
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process installed the same model first
        if overwrite or not (out / LOG_FILE).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return
    fsync_dir(out.parent)


def get_base_model(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    world_config: WorldConfig | None = None,
    config: PretrainConfig | None = None,
    progress: bool = True,
    use_shipped: bool = True,
) -> Path:
    """The pretrained base model's directory: the shipped one when it fits, else pretrained on first use.

    The fingerprint hashes the world (config, vocabulary, sample texts), the pretraining config, the seed
    and the recipe version. With ``use_shipped`` the package's ``shipped_base/`` is used when it was built
    for that fingerprint. Otherwise the model lives in ``cache_dir/<fingerprint>/`` (``cache_dir`` defaults
    to ``default_cache_dir()``), pretrained there on first use, so changing anything builds a new model and
    never reuses a stale one. Use the same ``world_config`` as the world you evaluate on: pretraining
    problems are kept disjoint from it.
    """
    world_config = world_config or WorldConfig()
    config = config or PretrainConfig()
    world = build_world(config=world_config)
    fingerprint = model_fingerprint(world, config, seed)
    if use_shipped and shipped_fingerprint() == fingerprint:
        return SHIPPED_DIR
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / fingerprint
    if (out / LOG_FILE).is_file() and (out / "config.json").is_file():
        return out
    return pretrain_base_model(world, out, config, seed, progress=progress, overwrite=False)


SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_base"


def shipped_fingerprint() -> str | None:
    """The fingerprint the shipped base was built for, or None when there is no complete shipped base."""
    log = SHIPPED_DIR / LOG_FILE
    if not (log.is_file() and (SHIPPED_DIR / "model.safetensors").is_file()):
        return None
    return json.loads(log.read_text()).get("fingerprint")


def build_shipped_base(progress: bool = True) -> Path:
    """Pretrain the default base model (seed 0, default world and recipe) into ``shipped_base/``."""
    return pretrain_base_model(build_world(config=WorldConfig()), SHIPPED_DIR, PretrainConfig(), 0, progress)
