"""Evaluate a model on math benchmarks: avg@k, pass@k (unbiased) and maj@k (equivalence-aware vote).

``corewarding eval --model PATH_OR_NAME [--benchmarks math500,gsm8k,amc,aime24,aime25] [--n 8] ...``
samples k completions per question with the training prompt (system prompt + question through the
model's chat template), scores them with the same answer engine as the rewards, prints a table and
writes ``<out>/results.json`` plus ``<out>/samples/<benchmark>.jsonl``. Re-running with the same ``--out``
resumes: finished samples are reused and only the missing ones are drawn.

Files in ``--out`` and what a damaged one means (the rules of :mod:`corewarding.files` apply throughout):

- ``samples/<benchmark>.jsonl`` is the record of truth. A torn last line (a crash mid-append) is dropped
  with a warning and sampled again; any other damage, including bytes that are not UTF-8, is an error
  naming the file and line, since guessing could silently lose or mix samples.
- ``settings.json`` guards the samples against being mixed with samples drawn under other settings, so it
  is not rebuilt when damaged: the run stops naming it, unless ``--overwrite`` is given (then it is
  written afresh, as when ``--overwrite`` changes the settings).
- ``results.json`` is only a summary of the sample files. When it cannot be read it is rebuilt with a
  warning: the chosen benchmarks are rescored from their samples, and entries of other benchmarks are
  left out until eval is rerun on them (which samples nothing new).

Every output location is checked before the model is loaded, so a regular file where the folder (or a
folder where a file) belongs is one error line, not a crash after hours of sampling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corewarding.arguments import (
    NONNEGATIVE_INT,
    OPEN_FRACTION,
    POSITIVE_INT,
    SEED,
    TEMPERATURE,
)
from corewarding.errors import ConfigError, DataError
from corewarding.evaluation.benchmarks import (
    DEFAULT_BENCHMARKS,
    REGISTRY,
    Benchmark,
    parse_assignments,
    resolve_benchmarks,
)

if TYPE_CHECKING:
    from corewarding.evaluation.evaluate import Completion

log = logging.getLogger(__name__)

# Settings that change what a sample is; samples drawn under other values must not be reused.
SAMPLING_KEYS = ("model", "temperature", "top_p", "top_k", "max_new_tokens")


# ---------------------------------------------------------------- shared with ``corewarding solve``


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, engine and sampling options shared by ``eval`` and ``solve``."""
    g = parser.add_argument_group("model and engine")
    g.add_argument("--model", required=True, help="hub id, local model directory, or builtin:tiny-qwen3")
    g.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="transformers (default) or vLLM")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
    g.add_argument(
        "--batch-size", type=POSITIVE_INT, default=64, help="sequences per generate call (hf engine)"
    )
    g.add_argument("--seed", type=SEED, default=0, help="sampling seed")
    g.add_argument(
        "--gpu-memory-utilization",
        type=OPEN_FRACTION,
        default=0.85,
        help="vLLM's share of GPU memory, in (0, 1]",
    )
    s = parser.add_argument_group("sampling")
    s.add_argument("--temperature", type=TEMPERATURE, default=0.8, help="0 = greedy (default 0.8)")
    s.add_argument("--top-p", type=OPEN_FRACTION, default=1.0, help="nucleus mass in (0, 1] (default 1)")
    s.add_argument("--top-k", type=NONNEGATIVE_INT, default=0, help="0 = no top-k")
    s.add_argument("--max-new-tokens", type=POSITIVE_INT, default=3072)


def sampling_from_args(args: argparse.Namespace):
    """The sampling settings of the parsed options (their domains are checked by their argparse types)."""
    from corewarding.rollout.types import SamplingParams

    return SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )


def build_engine(args: argparse.Namespace):
    """The rollout engine named by ``--engine`` for ``--model`` (loads the model; heavy imports here)."""
    if args.engine == "vllm":
        from corewarding.rollout.vllm_engine import VLLMRolloutEngine

        if args.device not in (None, "cuda", "cuda:0"):
            raise ConfigError(
                f"--engine vllm runs on the visible GPU(s); --device {args.device} is not supported"
            )
        return VLLMRolloutEngine.from_pretrained(
            args.model, dtype=args.dtype, seed=args.seed, gpu_memory_utilization=args.gpu_memory_utilization
        )
    import torch

    from corewarding.rollout.hf_engine import HFRolloutEngine

    torch.manual_seed(args.seed)
    return HFRolloutEngine.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )


# ---------------------------------------------------------------- eval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    b = parser.add_argument_group("benchmarks")
    b.add_argument(
        "--benchmarks",
        default=",".join(DEFAULT_BENCHMARKS),
        help="comma-separated names (%(default)s; also amc23) and/or paths to verl parquet / JSONL files",
    )
    b.add_argument("--n", type=POSITIVE_INT, default=8, help="samples per question (default 8)")
    b.add_argument(
        "--n-for",
        action="append",
        metavar="NAME=K",
        help="samples per question for one benchmark (repeatable)",
    )
    b.add_argument(
        "--limit", type=POSITIVE_INT, default=None, help="only the first N questions of each benchmark"
    )
    b.add_argument(
        "--data-dir", default=None, help="folder holding the benchmark files (default: shared data)"
    )
    b.add_argument(
        "--benchmark-file",
        action="append",
        metavar="NAME=PATH",
        help="use PATH for benchmark NAME (repeatable)",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--out", default=None, help="output folder (default: runs/eval/<model>); rerun to resume")
    o.add_argument("--overwrite", action="store_true", help="discard samples already in --out")
    o.add_argument(
        "--chunk-size",
        type=POSITIVE_INT,
        default=None,
        help="questions per engine call and per save (hf 16, vllm 256)",
    )
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.epilog = "benchmarks: " + "; ".join(f"{s.name} = {s.description}" for s in REGISTRY.values())


def default_out_dir(model: str) -> Path:
    name = model.split(":", 1)[1] if model.startswith("builtin:") else Path(model.rstrip("/")).name or model
    return Path("runs") / "eval" / "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, or a :class:`DataError` naming the file and what is wrong with it."""
    from corewarding.files import read_text

    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); expected {what}"
        ) from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object ({what}), got {type(value).__name__}")
    return value


def _read_settings(path: Path, overwrite: bool) -> dict[str, Any]:
    """``settings.json`` as written by :func:`check_settings`; ``{}`` when absent.

    Damage is an error (the file is the guard against mixing samples), except under ``--overwrite``,
    which writes it afresh anyway.
    """
    if not path.exists():
        return {}
    try:
        saved = read_json_object(path, "evaluation settings")
        sampling, files = saved.get("sampling", {}), saved.get("benchmarks", {})
        if not isinstance(sampling, dict):
            raise DataError(f"{path}: 'sampling' is {sampling!r:.60}; expected a JSON object")
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()
        ):
            raise DataError(f"{path}: 'benchmarks' must map each benchmark to its file's path and sha256")
    except DataError as err:
        if overwrite:
            log.warning("%s; --overwrite: writing it afresh", err)
            return {}
        raise DataError(
            f"{err}. This file records the settings the samples in {path.parent} were drawn with, so it "
            "is not rebuilt: fix it, use another --out, or pass --overwrite"
        ) from None
    return saved


def _set_aside_other_samples(out: Path, kept: set[str], settings_path: Path) -> None:
    """``--overwrite`` with new settings: move the sample files of benchmarks not in this run (drawn under the
    old settings, which ``settings.json`` will no longer describe) and the old ``settings.json`` to
    ``superseded/<time>/``, so a later run cannot silently reuse them and nothing is deleted."""
    import shutil

    others = sorted(p for p in (out / "samples").glob("*.jsonl") if p.stem not in kept)
    if not others:
        return
    dest = out / "superseded" / time.strftime("%Y%m%d-%H%M%S")
    (dest / "samples").mkdir(parents=True, exist_ok=True)
    if settings_path.exists():
        shutil.copy2(settings_path, dest / "settings.json")
    for p in others:
        shutil.move(p, dest / "samples" / p.name)
    names = ", ".join(p.stem for p in others)
    log.warning("--overwrite with new settings: samples of %s (old settings) moved to %s", names, dest)


def check_settings(
    out: Path, sampling_settings: dict[str, Any], benchmarks: list[Benchmark], overwrite: bool
) -> None:
    """Refuse to mix samples drawn under other settings (or from another benchmark file) into ``out``.

    ``settings.json`` records the sampling settings and each benchmark file's hash the first time a
    folder is used; a later run must match them (``--n`` and ``--limit`` may change: more samples or
    questions are simply added) or pass ``--overwrite``, which deletes the affected sample files.
    """
    from corewarding.files import atomic_write_json

    path = out / "settings.json"
    saved = _read_settings(path, overwrite)
    if overwrite:
        for b in benchmarks:
            (out / "samples" / f"{b.name}.jsonl").unlink(missing_ok=True)
        if any(saved.get("sampling", {}).get(k) != sampling_settings[k] for k in SAMPLING_KEYS):
            _set_aside_other_samples(out, {b.name for b in benchmarks}, path)
            saved = {}
    old = saved.get("sampling")
    if old is not None:
        diff = [k for k in SAMPLING_KEYS if old.get(k) != sampling_settings[k]]
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} there, {sampling_settings[k]!r} now" for k in diff)
            raise ConfigError(
                f"{out} holds samples drawn with other settings ({shown}); use another --out or --overwrite"
            )
    files = dict(saved.get("benchmarks", {}))
    for b in benchmarks:
        digest = _sha256(b.path)
        previous = files.get(b.name)
        if previous and previous["sha256"] != digest and not overwrite:
            raise ConfigError(
                f"{out}: benchmark {b.name!r} was sampled from another file ({previous.get('path')}, now "
                f"{b.path}); use another --out or --overwrite"
            )
        files[b.name] = {"path": str(b.path), "sha256": digest}
    atomic_write_json(path, {"sampling": sampling_settings, "benchmarks": files})


def read_previous_results(path: Path) -> dict[str, dict[str, Any]]:
    """The per-benchmark entries of an earlier ``results.json`` (kept for benchmarks not rerun now).

    ``results.json`` only summarizes the sample files, so a damaged one is a cache to rebuild, not an
    error: it is reported, and the entries of benchmarks not in this run are left out until eval is run
    on them again (their samples are reused, so that samples nothing).
    """
    if not path.exists():
        return {}
    try:
        entries = read_json_object(path, "evaluation results").get("benchmarks", {})
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise DataError(f"{path}: 'benchmarks' is not a JSON object of per-benchmark entries")
    except DataError as err:
        log.warning(
            "%s; rebuilding it from the samples of this run's benchmarks (rerun eval on any other "
            "benchmark to restore its entry; its samples are reused)",
            err,
        )
        return {}
    return entries


def check_outputs(out: Path, benchmarks: list[Benchmark]) -> None:
    """Prove every file eval will write in ``out`` can be written, before a model is loaded."""
    from corewarding.files import require_output_dir, require_output_file

    require_output_dir(out, "--out")
    require_output_dir(out / "samples", "--out's samples folder")
    for name in ("settings.json", "results.json"):
        require_output_file(out / name, f"--out's {name}")
    for b in benchmarks:
        require_output_file(out / "samples" / f"{b.name}.jsonl", f"--out's samples of {b.name!r}")


def evaluate_benchmark(
    engine,
    bench: Benchmark,
    out: Path,
    sampling,
    args: argparse.Namespace,
    existing: list[Completion],
) -> dict[str, Any]:
    """Sample what is missing for one benchmark, rescore everything, rewrite its sample file; return its entry.

    ``existing`` holds the samples already in its file (:func:`read_samples`, read before the model was
    loaded so that a damaged file stops the run early).
    """
    from corewarding.data import load_questions
    from corewarding.evaluation.evaluate import generate_completions, score_completions
    from corewarding.evaluation.metrics import pass_ks
    from corewarding.evaluation.records import completion_to_row
    from corewarding.files import JsonlAppender, atomic_write_jsonl

    questions = load_questions(bench.path, limit=args.limit)
    if not questions:
        raise ConfigError(f"benchmark {bench.name!r} ({bench.path}) has no questions")
    ids = {q.id for q in questions}
    golds = {q.id: q.gold for q in questions}
    samples_path = out / "samples" / f"{bench.name}.jsonl"
    usable = [c for c in existing if c.question_id in ids and c.sample_index < bench.n]
    have: dict[str, list[int]] = {}
    for c in usable:
        have.setdefault(c.question_id, []).append(c.sample_index)

    chunk = args.chunk_size or (256 if args.engine == "vllm" else 16)
    start = time.perf_counter()
    # the appender cuts a torn last line (already dropped by read_samples) before its first record
    with JsonlAppender(samples_path) as appender:

        def save_chunk(made: list[Completion]) -> None:
            appender.write(completion_to_row(c, golds.get(c.question_id)) for c in made)

        new = generate_completions(
            engine,
            questions,
            bench.n,
            sampling,
            have=have,
            chunk_questions=chunk,
            progress=not args.quiet,
            desc=bench.name,
            on_chunk=save_chunk,
        )
    seconds = time.perf_counter() - start

    score_start = time.perf_counter()
    result = score_completions(questions, usable + new, k=bench.n, extra_pass_ks=pass_ks(bench.n))
    metrics = result.metrics

    # rewrite the sample file in question order with answers and verdicts; keep rows this run did not score
    order = {q.id: i for i, q in enumerate(questions)}
    scored = sorted(result.completions, key=lambda c: (order[c.question_id], c.sample_index))
    kept = [c for c in existing if c.question_id not in ids or c.sample_index >= bench.n]
    atomic_write_jsonl(samples_path, [completion_to_row(c, golds.get(c.question_id)) for c in scored + kept])
    return {
        "path": str(bench.path),
        "protocol": REGISTRY[bench.name].description if bench.registered else "custom benchmark",
        "questions": len(questions),
        "n": bench.n,
        "metrics": metrics,
        "new_samples": len(new),
        "reused_samples": len(usable),
        "seconds": round(seconds, 3),
        "samples_per_s": round(len(new) / seconds, 3) if new and seconds > 0 else None,
        "scoring_seconds": round(time.perf_counter() - score_start, 3),
    }


def format_table(entries: dict[str, dict[str, Any]]) -> str:
    """The console summary: one row per benchmark, accuracies in percent."""
    header = [
        "benchmark",
        "questions",
        "k",
        "avg@k",
        "pass@k",
        "maj@k",
        "no-answer",
        "truncated",
        "tokens",
        "s",
    ]
    rows = [header]
    for name, e in entries.items():
        m, k = e["metrics"], e["n"]

        def pct(key: str, m: dict[str, Any] = m) -> str:
            return f"{100 * m[key]:.1f}" if key in m else "-"

        rows.append(
            [
                name,
                str(e["questions"]),
                str(k),
                pct(f"avg@{k}"),
                pct(f"pass@{k}"),
                pct(f"maj@{k}"),
                pct("no_answer_frac"),
                pct("truncated_frac"),
                f"{m.get('mean_response_tokens', 0):.0f}",
                f"{e['seconds']:.1f}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from corewarding import __version__
    from corewarding.evaluation.records import read_samples
    from corewarding.files import atomic_write_json
    from corewarding.models.builtin import resolve_model_path

    n_for: dict[str, int] = {}
    for name, value in parse_assignments(args.n_for, "--n-for").items():
        try:
            n_for[name] = int(POSITIVE_INT(value))
        except argparse.ArgumentTypeError:
            raise ConfigError(f"--n-for {name}={value}: expected {POSITIVE_INT.expected}") from None
    benchmarks = resolve_benchmarks(
        args.benchmarks,
        args.n,
        data_dir=args.data_dir,
        files=parse_assignments(args.benchmark_file, "--benchmark-file"),
        n_for=n_for,
    )
    sampling = sampling_from_args(args)
    out = Path(args.out) if args.out else default_out_dir(args.model)
    check_outputs(out, benchmarks)
    sampling_settings = {
        "model": args.model,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_new_tokens": sampling.max_new_tokens,
    }
    check_settings(out, sampling_settings, benchmarks, args.overwrite)
    results_path = out / "results.json"
    entries = {} if args.overwrite else read_previous_results(results_path)
    existing = {b.name: read_samples(out / "samples" / f"{b.name}.jsonl") for b in benchmarks}

    started = time.perf_counter()
    model_path = resolve_model_path(args.model)
    engine = build_engine(args)
    load_seconds = time.perf_counter() - started

    for b in benchmarks:
        entries.pop(b.name, None)
    this_run: dict[str, dict[str, Any]] = {}

    def save() -> None:
        new = sum(e["new_samples"] for e in this_run.values())
        sampling_s = sum(e["seconds"] for e in this_run.values())
        atomic_write_json(
            results_path,
            {
                "model": args.model,
                "model_path": model_path,
                "engine": args.engine,
                "settings": {
                    **{k: v for k, v in sampling_settings.items() if k != "model"},
                    "n": args.n,
                    "n_for": n_for,
                    "limit": args.limit,
                    "seed": args.seed,
                    "batch_size": args.batch_size,
                    "device": args.device,
                    "dtype": args.dtype,
                },
                "benchmarks": {**entries, **this_run},
                "seconds": round(time.perf_counter() - started, 3),
                "model_load_seconds": round(load_seconds, 3),
                "samples": new,
                "samples_per_s": round(new / sampling_s, 3) if new and sampling_s > 0 else None,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "corewarding_version": __version__,
            },
        )

    for b in benchmarks:
        this_run[b.name] = evaluate_benchmark(engine, b, out, sampling, args, existing.pop(b.name))
        save()  # after each benchmark, so finished ones are on record even if a later one crashes

    print(format_table(this_run))
    total = sum(e["new_samples"] for e in this_run.values())
    rate = sum(e["seconds"] for e in this_run.values())
    print(
        f"{total} new samples in {rate:.1f}s"
        + (f" ({total / rate:.2f} samples/s)" if total and rate > 0 else "")
        + f"; results: {results_path}",
        file=sys.stderr,
    )
    return 0
