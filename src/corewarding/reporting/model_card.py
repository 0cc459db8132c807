"""The model card (``README.md``) written into every exported checkpoint.

A checkpoint's Hugging Face export is what gets shared, so it says what a Co-rewarding model card says: the
method and the paper, the base model, the training data and its rephrasings, the hyperparameters the run
actually used (from its resolved config), the latest validation figures, and how to load and prompt it with
the system prompt the run trained with. The card is built with ``huggingface_hub``'s ``ModelCard`` /
``ModelCardData``, so its YAML metadata (``base_model``, ``datasets``, ``tags``, ``license``,
``pipeline_tag``) is what the Hub indexes.

Only hub ids go into the metadata; local files and built-in models are named in the body instead. The
license is copied from the base model's own card when that card is on this machine (a local model folder,
or the Hugging Face cache), and left out otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corewarding import __version__
from corewarding.config import Config
from corewarding.training.run_log import read_metrics

PAPER_URL = "https://arxiv.org/abs/2508.00410"
CODE_URL = "https://github.com/tmlr-group/Co-rewarding"
CARD_FILE = "README.md"
ADAPTER_DIR = "adapter"  # a LoRA run's adapter in peft's format (corewarding.training.lora.ADAPTER_DIR)
# the line of the loading snippet that names the model: `corewarding push` points it at the repository
MODEL_ID_LINE = re.compile(r'^model_id = "[^"]*"(.*)$', re.MULTILINE)

METHOD_LABELS = {
    "co_rewarding_i": "Co-rewarding-I",
    "co_rewarding_ii": "Co-rewarding-II",
    "majority_vote": "majority-vote baseline",
    "self_certainty": "self-certainty baseline",
    "entropy": "entropy baseline",
    "gt": "ground-truth baseline",
}

_LOCAL_PREFIXES = ("builtin:", "shared:", "/", ".", "~")
_FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".arrow", ".txt", ".yaml", ".yml")


def method_sentence(cfg: Config) -> str:
    """One sentence on how the run rewarded its rollouts."""
    m = cfg.method
    if m == "co_rewarding_i":
        return (
            "**Co-rewarding-I** (data side): every training question is paired with a rephrasing that has the "
            "same answer; the majority answer of the policy's rollouts on one view is the pseudo-label that "
            "rewards the rollouts on the other view, and both views train."
        )
    if m == "co_rewarding_ii":
        teacher = (
            f"an EMA of the policy (rate cosine-annealed from {cfg.teacher.a_start:g} to {cfg.teacher.a_end:g})"
            if cfg.teacher.ema
            else "a frozen copy of the initial policy (the paper's frozen-teacher ablation)"
        )
        return (
            f"**Co-rewarding-II** (model side): a teacher, {teacher}, samples its own rollouts of each question; "
            "their majority answer is the pseudo-label that rewards the policy's rollouts, and the teacher is "
            "also the KL reference."
        )
    if m == "majority_vote":
        view = (
            " on the rephrased questions (an ablation of the paper)" if cfg.data.view == "rephrased" else ""
        )
        return (
            f"the **majority-vote baseline** (TTRL-style){view}: the majority answer of a question's own "
            "rollouts is the pseudo-label that rewards them."
        )
    if m == "self_certainty":
        return (
            "the **self-certainty baseline** (Intuitor): each rollout is rewarded by the policy's mean "
            "token-level KL(uniform || p) while writing it, its confidence."
        )
    if m == "entropy":
        return (
            "the **entropy baseline** (RENT): each rollout is rewarded by the negative mean entropy of the "
            "policy's token distributions while writing it."
        )
    if m == "gt":
        return (
            "the **ground-truth baseline** (supervised, the upper bound): a rollout earns 1 when its answer "
            "matches the dataset's gold answer; unlike the other methods it uses labels."
        )
    cls = _method_class(cfg)
    doc = (cls.__doc__ or "").strip().split("\n")[0] if cls is not None else ""
    return f"the reward method `{m}`" + (f": {doc}" if doc else ".")


def hub_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hugging Face hub id (``org/name`` or ``name``), else None (a local path,
    a ``shared:`` data path, a ``builtin:`` model, a file name)."""
    if not name:
        return None
    text = str(name)
    if text.startswith(_LOCAL_PREFIXES) or text.lower().endswith(_FILE_SUFFIXES) or text.count("/") > 1:
        return None
    if Path(text).expanduser().exists():
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


@dataclass
class BaseModelInfo:
    name: str  # as the config names it
    hub_id: str | None  # for the metadata
    license: str | None
    note: str  # how the body describes it


def _read_card(path: Path | None):
    """The ``ModelCard`` at ``path`` (a README.md), or None when absent or unreadable."""
    if path is None or not path.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path, ignore_metadata_errors=True)
    except Exception:  # a malformed card of the base model must not stop a checkpoint
        return None


def _cached_card(repo_id: str) -> Path | None:
    """The base model's README.md when it is in the local Hugging Face cache (never downloaded here)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, CARD_FILE)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None


def base_model_info(name_or_path: str) -> BaseModelInfo:
    """What is known locally about the base model: its hub id, its license (from its own card)."""
    name = str(name_or_path)
    if name.startswith("builtin:"):
        return BaseModelInfo(name, None, None, f"the built-in model `{name}` (built locally by corewarding)")
    repo = hub_id(name)
    if repo is not None:
        card = _read_card(_cached_card(repo))
        license_ = getattr(card.data, "license", None) if card else None
        return BaseModelInfo(name, repo, license_, f"[{repo}](https://huggingface.co/{repo})")
    card = _read_card(Path(name).expanduser() / CARD_FILE)
    data = card.data if card else None
    upstream = hub_id(_first(getattr(data, "base_model", None)))
    note = f"the local model `{name}`"
    if upstream:
        note += f" (itself fine-tuned from [{upstream}](https://huggingface.co/{upstream}))"
    return BaseModelInfo(name, upstream, getattr(data, "license", None), note)


def _method_class(cfg: Config):
    """The run's ``RewardMethod`` class (a registered one or a plug-in), or None when it cannot be found."""
    from corewarding import rewards

    finder = getattr(rewards, "method_class", None)
    try:
        return finder(cfg.method) if finder else rewards.REGISTRY.get(cfg.method)
    except Exception:  # a plug-in that no longer imports: the card still describes the run
        return None


def _method_name(cfg: Config) -> str:
    cls = _method_class(cfg)
    return str(getattr(cls, "name", None) or cfg.method)


def _uses_rephrased(cfg: Config) -> bool:
    cls = _method_class(cfg)
    return bool(
        getattr(cls, "needs_rephrased", cfg.method == "co_rewarding_i")
        or cfg.data.view == "rephrased"
        or (
            getattr(cls, "needs_teacher", cfg.method == "co_rewarding_ii") and cfg.teacher.view == "rephrased"
        )
    )


def reward_options(cfg: Config) -> dict[str, Any]:
    """The ``reward.*`` options the run's method takes (what ``Trainer`` hands it), its own included."""
    accepted = getattr(_method_class(cfg), "option_defaults", {})
    opts = {k: v for k, v in asdict(cfg.reward).items() if k in accepted}
    opts.update(getattr(cfg, "method_options", None) or {})
    return opts


def logged_validation(metrics_path: Path, up_to_step: int) -> tuple[int, dict[str, float]] | None:
    """The latest ``val/*`` figures in a run's ``metrics.jsonl`` at or before ``up_to_step``."""
    found = None
    for row in read_metrics(metrics_path):
        step = row.get("step")
        if not isinstance(step, int) or step > up_to_step:
            continue
        val = {k: float(v) for k, v in row.items() if k.startswith("val/") and isinstance(v, int | float)}
        if val:
            found = (step, val)
    return found


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "—"
    return str(value)


def _val_fmt(key: str, value: float) -> str:
    if key.endswith("questions"):
        return f"{value:.0f}"
    if "tokens" in key:
        return f"{value:.1f}"
    return f"{value:.4f}"


def hyperparameters(cfg: Config, step: int) -> list[tuple[str, Any, str]]:
    """(setting, value, config key) rows of the hyperparameters the run used."""
    t, r, g, o = cfg.trainer, cfg.rollout, cfg.grpo, cfg.optim
    views = 2 if cfg.method == "co_rewarding_i" else 1
    rows: list[tuple[str, Any, str]] = [
        ("training steps done", f"{step} of {t.total_steps}", "trainer.total_steps"),
        ("questions per step", t.batch_questions, "trainer.batch_questions"),
        ("rollouts per question (G)", r.n, "rollout.n"),
        ("rollouts per step", t.batch_questions * r.n * views, ""),
        ("learning rate", o.lr, "optim.lr"),
        ("schedule", f"{o.schedule}, warmup {o.warmup_ratio:g}", "optim.schedule, optim.warmup_ratio"),
        ("weight decay", o.weight_decay, "optim.weight_decay"),
        ("gradient clipping", o.grad_clip, "optim.grad_clip"),
        ("KL coefficient", g.kl_coef, "grpo.kl_coef"),
        ("PPO clip ratio", g.clip_ratio, "grpo.clip_ratio"),
        ("loss aggregation", g.loss_agg, "grpo.loss_agg"),
        ("updates per step", g.updates_per_step, "grpo.updates_per_step"),
        ("rollout temperature", r.temperature, "rollout.temperature"),
        ("rollout top-p / top-k", f"{r.top_p:g} / {r.top_k}", "rollout.top_p, rollout.top_k"),
        ("max prompt length (tokens)", cfg.data.max_prompt_length, "data.max_prompt_length"),
        ("max response length (tokens)", r.max_new_tokens, "rollout.max_new_tokens"),
    ]
    if cfg.method == "co_rewarding_ii":
        rows += [
            ("teacher rollouts per question", cfg.teacher.n, "teacher.n"),
            ("teacher EMA", cfg.teacher.ema, "teacher.ema"),
            ("teacher questions", cfg.teacher.view, "teacher.view"),
        ]
        if cfg.teacher.ema:
            rows += [
                ("EMA rate (start → end)", f"{cfg.teacher.a_start:g} → {cfg.teacher.a_end:g}", "teacher.a_*"),
                ("EMA update interval (steps)", cfg.teacher.update_interval, "teacher.update_interval"),
            ]
    if cfg.method != "co_rewarding_i" and cfg.data.view != "original":
        rows.append(("training questions", cfg.data.view, "data.view"))
    own = getattr(cfg, "method_options", None) or {}
    rows += [
        (f"reward: {k}", v, f"method_options.{k}" if k in own else f"reward.{k}")
        for k, v in reward_options(cfg).items()
    ]
    lora = getattr(cfg.model, "lora", None)
    if lora is not None and getattr(lora, "r", 0) > 0:
        alpha = lora.alpha if lora.alpha is not None else 2 * lora.r
        export = "merged into the base weights" if lora.merge_on_export else "the adapter alone (adapter/)"
        rows += [
            ("LoRA rank / alpha / dropout", f"{lora.r} / {alpha:g} / {lora.dropout:g}", "model.lora.*"),
            ("LoRA target modules", ", ".join(lora.target_modules), "model.lora.target_modules"),
            ("LoRA export", export, "model.lora.merge_on_export"),
        ]
    rows += [
        ("weights / compute precision", f"{cfg.model.dtype} / {cfg.model.compute_dtype}", "model.*dtype"),
        ("export precision", cfg.trainer.export_dtype, "trainer.export_dtype"),
        ("seed", t.seed, "trainer.seed"),
    ]
    return rows


def _data_name(path: str) -> str:
    repo = hub_id(path)
    if repo:
        return f"[{repo}](https://huggingface.co/datasets/{repo})"
    return f"`{path}` (a local file)"


def _data_section(cfg: Config) -> list[str]:
    d = cfg.data
    name = _data_name

    limit = f", its first {d.limit} rows" if d.limit else ""
    lines = [f"- Training questions: {name(d.train)}{limit}."]
    if d.train_rephrased and _uses_rephrased(cfg):
        lines.append(
            f"- Rephrasings: {name(d.train_rephrased)}, row-aligned with the training questions (each "
            "rephrasing keeps the question's answer); "
            + (
                "the second view of Co-rewarding-I."
                if cfg.method == "co_rewarding_i"
                else "the questions this run trained on."
                if cfg.data.view == "rephrased"
                else "the questions the teacher answered."
            )
        )
    elif d.train_rephrased:
        lines.append(
            f"- Rephrasings ({name(d.train_rephrased)}) were configured, but this method does not use them."
        )
    if cfg.method != "gt":
        lines.append(
            "- No ground-truth answer was used for the reward (golds only enter the logged metrics)."
        )
    if d.val:
        vlimit = f", its first {d.val_limit} questions" if d.val_limit else ""
        lines.append(f"- Validation: {name(d.val)}{vlimit}.")
    return lines


def _py(text: str) -> str:
    """``text`` as a double-quoted Python string literal (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def _snippet(
    model_id: str, system_prompt: str | None, chat_template: bool, adapter: bool, cfg: Config
) -> str:
    """A transformers snippet that loads the export and prompts it as the run's training did."""
    question = _py("What is the sum of the first 10 positive integers?")
    lines = ["from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if adapter:
        lines.append("from peft import PeftModel")
    lines += [
        "",
        f"model_id = {_py(model_id)}  # the Hub repository or the checkpoint folder",
        "tokenizer = AutoTokenizer.from_pretrained(model_id)",
    ]
    if adapter:
        base = hub_id(cfg.model.name_or_path) or "path/to/the/base/model"
        lines += [
            f'base = AutoModelForCausalLM.from_pretrained({_py(base)}, dtype="auto")  # model.name_or_path',
            f'model = PeftModel.from_pretrained(base, model_id, subfolder="{ADAPTER_DIR}")',
        ]
    else:
        lines.append('model = AutoModelForCausalLM.from_pretrained(model_id, dtype="auto")')
    lines.append("")
    if chat_template:
        lines.append("messages = [")
        if system_prompt:
            lines.append(f'    {{"role": "system", "content": {_py(system_prompt)}}},')
        lines += [
            f'    {{"role": "user", "content": {question}}},',
            "]",
            "inputs = tokenizer.apply_chat_template(",
            '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
            ")",
        ]
    else:
        system = f"{_py(system_prompt)} + {_py(chr(10) * 2)} + " if system_prompt else ""
        lines += [
            "# no chat template: the run's prompts were the messages joined by a blank line",
            f"prompt = {system}{question} + {_py(chr(10))}",
            'inputs = tokenizer(prompt, return_tensors="pt")',
        ]
    temperature = f"{cfg.validation.temperature:g}"
    lines += [
        f"output = model.generate(**inputs, max_new_tokens={cfg.rollout.max_new_tokens}, do_sample=True, "
        f"temperature={temperature})",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))',
    ]
    return "\n".join(lines)


def system_prompt_of(cfg: Config, messages: list[dict[str, str]] | None) -> str | None:
    """The system prompt of the run's prompts: that of a training question's chat when given (verl data
    carries its own), else ``data.system_prompt``."""
    if messages is not None:
        return next((m["content"] for m in messages if m.get("role") == "system"), None)
    return cfg.data.system_prompt or None


def build_model_card(
    cfg: Config,
    step: int,
    *,
    validation: tuple[int, dict[str, float]] | None = None,
    messages: list[dict[str, str]] | None = None,
    repo_id: str | None = None,
    chat_template: bool = True,
    adapter: bool = False,
    has_teacher: bool = False,
):
    """The ``ModelCard`` of a checkpoint exported at ``step`` by a run configured by ``cfg``.

    ``validation``: ``(step, {"val/avg@4": ...})``, the latest validation; ``messages``: one training
    question's chat (its system prompt is the run's); ``repo_id``: the Hub repository the loading snippet
    names (default ``trainer.hub_repo_id``, else the checkpoint folder).
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model_info(cfg.model.name_or_path)
    label = METHOD_LABELS.get(cfg.method, f"`{_method_name(cfg)}`")
    datasets = [
        h for h in (hub_id(cfg.data.train), _uses_rephrased(cfg) and hub_id(cfg.data.train_rephrased)) if h
    ]
    method_tag = _method_name(cfg).replace("_", "-")
    tags = ["co-rewarding", "grpo", "reinforcement-learning", "math", "reasoning"]
    tags += ["self-supervised"] if cfg.method != "gt" else []
    tags += [method_tag] if method_tag not in tags else []
    tags.append("corewarding")
    data = ModelCardData(
        base_model=base.hub_id,
        library_name="peft" if adapter else "transformers",
        datasets=list(dict.fromkeys(datasets)) or None,
        license=base.license,
        pipeline_tag="text-generation",
        tags=tags,
    )
    run_name = cfg.run_dir.name
    model_id = repo_id or cfg.trainer.hub_repo_id or f"path/to/{run_name}/checkpoint-{step}"
    system_prompt = system_prompt_of(cfg, messages)

    base_short = base.name.removeprefix("builtin:").rstrip("/").split("/")[-1]
    body = [
        f"# {base_short} trained with {label}",
        "",
        f"This is {base.note} trained with the {label} method on {_data_name(cfg.data.train)}, "
        "as presented in the paper "
        f"[Co-rewarding: Stable Self-supervised RL for Eliciting Reasoning in Large Language Models]({PAPER_URL}) "
        f"(the authors' code: {CODE_URL}). It was trained by corewarding {__version__}, an open "
        "implementation of the paper.",
        "",
        "## Method",
        "",
        "Co-rewarding is self-supervised reinforcement learning (GRPO) that improves reasoning without "
        "ground-truth labels: the reward comes from a complementary view of each question, which makes the "
        "collapse of single-view self-rewarding (a policy rewarding itself for being consistently wrong) "
        "harder. *Co-rewarding-I* (data side) takes pseudo-labels from rephrased questions, *Co-rewarding-II* "
        "(model side) from a slowly updated EMA teacher.",
        "",
        f"This checkpoint was trained with {method_sentence(cfg)}",
        "",
        "## Training data",
        "",
        *_data_section(cfg),
        "",
        "## Hyperparameters",
        "",
        "| setting | value | config key |",
        "|---|---|---|",
        *[
            f"| {name} | {_fmt(value)} | {f'`{key}`' if key else ''} |"
            for name, value, key in hyperparameters(cfg, step)
        ],
        "",
        "## Validation",
        "",
    ]
    if validation:
        vstep, figures = validation
        body += [
            f"Latest validation, at step {vstep}: {cfg.validation.n} samples per question at temperature "
            f"{cfg.validation.temperature:g}, answers read with `reward.extraction={cfg.reward.extraction}` "
            "(avg@k is the paper's pass@1).",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k.removeprefix('val/')} | {_val_fmt(k, v)} |" for k, v in sorted(figures.items())],
        ]
    else:
        body.append("No validation ran before this checkpoint.")
    body += [
        "",
        "## Usage",
        "",
        "The prompt the run trained with: "
        + (
            f"the system prompt `{system_prompt}` and the question as the user turn"
            if system_prompt
            else "the question alone as the user turn"
        )
        + (
            ", through the tokenizer's chat template."
            if chat_template
            else ", joined by a blank line (no chat template)."
        ),
        "The final answer is the last `\\boxed{...}` of the response.",
        "",
        "```python",
        _snippet(model_id, system_prompt, chat_template, adapter, cfg),
        "```",
        "",
        f"Benchmarks: `corewarding eval --model {model_id} --benchmarks math500,gsm8k,amc,aime24,aime25`.",
    ]
    if has_teacher:
        body += ["", "`teacher/` holds the Co-rewarding-II teacher at the same step (same format)."]
    body += [
        "",
        "## Citation",
        "",
        "```bibtex",
        "@article{zhang2025corewarding,",
        "  title   = {Co-rewarding: Stable Self-supervised RL for Eliciting Reasoning in Large Language Models},",
        "  author  = {Zhang, Zizhuo and Zhu, Jianing and Ge, Xinmu and Zhao, Zihua and Zhou, Zhanke and Li, Xuan",
        "             and Feng, Xiao and Yao, Jiangchao and Han, Bo},",
        "  journal = {arXiv preprint arXiv:2508.00410},",
        "  year    = {2025},",
        "  url     = {https://arxiv.org/abs/2508.00410},",
        "}",
        "```",
        "",
    ]
    template = "---\n{{ card_data }}\n---\n\n{{ body }}"
    return ModelCard.from_template(data, template_str=template, body="\n".join(body))


def _has_chat_template(directory: Path) -> bool:
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text()).get("chat_template"))
        except (OSError, ValueError):
            return False
    return False


def write_model_card(
    directory: Path,
    cfg: Config,
    step: int,
    *,
    validation: tuple[int, dict[str, float]] | None = None,
    messages: list[dict[str, str]] | None = None,
) -> Path:
    """Write ``directory/README.md`` for the export in ``directory`` (tokenizer saved first). Without
    ``validation`` the latest figures logged in the run's ``metrics.jsonl`` up to ``step`` are used (a
    resumed run has not validated yet)."""
    directory = Path(directory)
    if validation is None:
        validation = logged_validation(cfg.run_dir / "metrics.jsonl", step)
    card = build_model_card(
        cfg,
        step,
        validation=validation,
        messages=messages,
        chat_template=_has_chat_template(directory),
        # a LoRA run without merge_on_export exports the adapter alone (no config.json at the top)
        adapter=not (directory / "config.json").is_file() and (directory / ADAPTER_DIR).is_dir(),
        has_teacher=(directory / "teacher").is_dir(),
    )
    path = directory / CARD_FILE
    card.save(path)
    return path


def set_model_id(card_path: Path, repo_id: str) -> bool:
    """Point a corewarding card's loading snippet at ``repo_id`` (before it is pushed there); whether the
    card changed."""
    text = card_path.read_text(encoding="utf-8")
    new = MODEL_ID_LINE.sub(lambda m: f'model_id = "{repo_id}"{m.group(1)}', text, count=1)
    new = re.sub(r"`corewarding eval --model \S+ ", f"`corewarding eval --model {repo_id} ", new, count=1)
    if new == text:
        return False
    card_path.write_text(new, encoding="utf-8")
    return True
