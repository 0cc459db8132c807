"""Evaluate a model on math benchmarks: avg@k, pass@k (unbiased) and maj@k (equivalence-aware vote).

``corewarding eval --model PATH_OR_NAME [--benchmarks math500,gsm8k,amc,aime24,aime25] [--n 8] ...``
samples k completions per question with the training prompt (system prompt + question through the
model's chat template), scores them with the same answer engine as the rewards, prints a table and
writes ``<out>/results.json`` plus ``<out>/samples/<benchmark>.jsonl``. Re-running with the same ``--out``
resumes: finished samples are reused and only the missing ones are drawn.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corewarding.errors import ConfigError
from corewarding.evaluation.benchmarks import (
    DEFAULT_BENCHMARKS,
    REGISTRY,
    Benchmark,
    parse_assignments,
    resolve_benchmarks,
)

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
    g.add_argument("--batch-size", type=int, default=64, help="sequences per generate call (hf engine)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vLLM's share of GPU memory")
    s = parser.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0, help="0 = no top-k")
    s.add_argument("--max-new-tokens", type=int, default=3072)


def sampling_from_args(args: argparse.Namespace):
    from corewarding.rollout.types import SamplingParams

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    return SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )


def build_engine(args: argparse.Namespace):
    """The rollout engine named by ``--engine`` for ``--model`` (loads the model; heavy imports here)."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
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
    b.add_argument("--n", type=int, default=8, help="samples per question (default 8)")
    b.add_argument(
        "--n-for",
        action="append",
        metavar="NAME=K",
        help="samples per question for one benchmark (repeatable)",
    )
    b.add_argument("--limit", type=int, default=None, help="only the first N questions of each benchmark")
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
        type=int,
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


def check_settings(
    out: Path, sampling_settings: dict[str, Any], benchmarks: list[Benchmark], overwrite: bool
) -> None:
    """Refuse to mix samples drawn under other settings (or from another benchmark file) into ``out``.

    ``settings.json`` records the sampling settings and each benchmark file's hash the first time a
    folder is used; a later run must match them (``--n`` and ``--limit`` may change: more samples or
    questions are simply added) or pass ``--overwrite``, which deletes the affected sample files.
    """
    from corewarding.evaluation.records import write_json_atomic

    path = out / "settings.json"
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if overwrite:
        for b in benchmarks:
            (out / "samples" / f"{b.name}.jsonl").unlink(missing_ok=True)
        if any(saved.get("sampling", {}).get(k) != sampling_settings[k] for k in SAMPLING_KEYS):
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
                f"{out}: benchmark {b.name!r} was sampled from another file ({previous['path']}, now {b.path}); "
                "use another --out or --overwrite"
            )
        files[b.name] = {"path": str(b.path), "sha256": digest}
    write_json_atomic(path, {"sampling": sampling_settings, "benchmarks": files})


def evaluate_benchmark(
    engine, bench: Benchmark, out: Path, sampling, args: argparse.Namespace
) -> dict[str, Any]:
    """Sample what is missing for one benchmark, rescore everything, rewrite its sample file; return its entry."""
    from corewarding.data import load_questions
    from corewarding.evaluation.evaluate import generate_completions, score_completions
    from corewarding.evaluation.metrics import pass_ks
    from corewarding.evaluation.records import (
        SampleAppender,
        completion_to_row,
        read_samples,
        write_jsonl_atomic,
    )

    questions = load_questions(bench.path, limit=args.limit)
    if not questions:
        raise ConfigError(f"benchmark {bench.name!r} ({bench.path}) has no questions")
    ids = {q.id for q in questions}
    golds = {q.id: q.gold for q in questions}
    samples_path = out / "samples" / f"{bench.name}.jsonl"
    existing, valid_bytes = read_samples(samples_path)
    usable = [c for c in existing if c.question_id in ids and c.sample_index < bench.n]
    have: dict[str, list[int]] = {}
    for c in usable:
        have.setdefault(c.question_id, []).append(c.sample_index)

    chunk = args.chunk_size or (256 if args.engine == "vllm" else 16)
    start = time.perf_counter()
    with SampleAppender(samples_path, valid_bytes, golds) as appender:
        new = generate_completions(
            engine,
            questions,
            bench.n,
            sampling,
            have=have,
            chunk_questions=chunk,
            progress=not args.quiet,
            desc=bench.name,
            on_chunk=appender.append,
        )
    seconds = time.perf_counter() - start

    score_start = time.perf_counter()
    result = score_completions(questions, usable + new, k=bench.n, extra_pass_ks=pass_ks(bench.n))
    metrics = result.metrics

    # rewrite the sample file in question order with answers and verdicts; keep rows this run did not score
    order = {q.id: i for i, q in enumerate(questions)}
    scored = sorted(result.completions, key=lambda c: (order[c.question_id], c.sample_index))
    kept = [c for c in existing if c.question_id not in ids or c.sample_index >= bench.n]
    write_jsonl_atomic(samples_path, [completion_to_row(c, golds.get(c.question_id)) for c in scored + kept])
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
    from corewarding.evaluation.records import write_json_atomic
    from corewarding.models.builtin import resolve_model_path

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    n_for: dict[str, int] = {}
    for name, value in parse_assignments(args.n_for, "--n-for").items():
        try:
            n_for[name] = int(value)
        except ValueError:
            raise ConfigError(f"--n-for {name}={value}: expected an integer") from None
    benchmarks = resolve_benchmarks(
        args.benchmarks,
        args.n,
        data_dir=args.data_dir,
        files=parse_assignments(args.benchmark_file, "--benchmark-file"),
        n_for=n_for,
    )
    sampling = sampling_from_args(args)
    out = Path(args.out) if args.out else default_out_dir(args.model)
    out.mkdir(parents=True, exist_ok=True)
    sampling_settings = {
        "model": args.model,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_new_tokens": sampling.max_new_tokens,
    }
    check_settings(out, sampling_settings, benchmarks, args.overwrite)

    started = time.perf_counter()
    model_path = resolve_model_path(args.model)
    engine = build_engine(args)
    load_seconds = time.perf_counter() - started

    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() and not args.overwrite else {}
    entries: dict[str, dict[str, Any]] = dict(previous.get("benchmarks", {}))
    for b in benchmarks:
        entries.pop(b.name, None)
    this_run: dict[str, dict[str, Any]] = {}

    def save() -> None:
        new = sum(e["new_samples"] for e in this_run.values())
        sampling_s = sum(e["seconds"] for e in this_run.values())
        write_json_atomic(
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
        this_run[b.name] = evaluate_benchmark(engine, b, out, sampling, args)
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
