"""Build the rephrased view of a question set (Co-rewarding-I's second view).

``corewarding rephrase INPUT --out OUT.parquet`` asks a model to rewrite every question with the paper's
instruction and writes a verl parquet aligned row by row with INPUT (same ground truth, same
``extra_info.index``, plus ``extra_info.original_question`` and ``extra_info.rephrase_status``), so that
``load_pairs(INPUT, OUT)`` pairs them. Beside OUT it keeps:

* ``OUT-stem.log.jsonl`` — every raw generation (row, attempt, seed, reply, status, reason, tokens);
* ``OUT-stem.state.jsonl`` — finished rows; rerunning the same command resumes from it;
* ``OUT-stem.summary.json`` — the counts printed at the end;
* ``OUT-stem.original.parquet`` — with ``--on-failure drop`` or ``--drop-disagreeing``: the original rows
  that were kept, aligned with OUT (the pair to give ``load_pairs``).

Backends: ``--api-base URL --model NAME`` (OpenAI-compatible server such as ``vllm serve`` or SGLang),
``--backend hf --model PATH`` (local transformers model, batched) or ``--engine vllm --model PATH``
(offline vLLM). Example with a Qwen3 server and thinking off::

    corewarding rephrase shared:train/math/train_original.parquet --out math_rephrased.parquet \\
        --api-base http://localhost:8000/v1 --model Qwen/Qwen3-32B \\
        --extra-body '{"chat_template_kwargs": {"enable_thinking": false}}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from corewarding.errors import ConfigError, CorewardingError
from corewarding.rollout.types import SamplingParams


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 2)[2] if __doc__ else None
    parser.add_argument(
        "input", help="question set: verl parquet, benchmark JSONL, dataset folder/name, shared:..."
    )
    parser.add_argument("--out", required=True, help="output parquet (verl layout, aligned with INPUT)")
    parser.add_argument("--split", default=None, help="dataset split (for dataset inputs)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of INPUT")

    g = parser.add_argument_group("backend")
    g.add_argument(
        "--backend", "--engine", dest="backend", choices=("api", "hf", "vllm"), default=None,
        help="api (OpenAI-compatible HTTP; the default with --api-base), hf (local transformers; the default "
        "otherwise) or vllm (offline vllm.LLM, when installed)",
    )  # fmt: skip
    g.add_argument("--model", required=True, help="model name served at --api-base, or a local model path")
    g.add_argument(
        "--api-base", default=None, help="e.g. http://localhost:8000/v1 (POSTs {api_base}/chat/completions)"
    )
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    g.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="rows in flight (default: 8 for api, --batch-size for local models)",
    )
    g.add_argument("--batch-size", type=int, default=16, help="local models: sequences per generate call")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per HTTP request")
    g.add_argument(
        "--http-retries",
        type=int,
        default=6,
        help="retries of one HTTP request on 429/5xx/connection errors/timeouts before the run stops",
    )
    g.add_argument(
        "--backoff", type=float, default=1.0, help="first backoff delay in seconds (doubles each retry)"
    )
    g.add_argument("--extra-body", default=None, help="JSON object merged into every HTTP request body")
    g.add_argument(
        "--tokenizer",
        default=None,
        help="api: count tokens with this tokenizer when the server reports no usage",
    )
    g.add_argument("--device", default=None, help="local models: torch device (default: cuda if available)")
    g.add_argument("--dtype", default=None, help="local models: float32, bf16, fp16 or auto")

    g = parser.add_argument_group("rewriting")
    g.add_argument(
        "--prompt-file",
        default=None,
        help="rewriting instruction (default: the paper's); the question is appended after a blank line, "
        "or put where the file says {question}",
    )
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.8)
    g.add_argument("--max-tokens", type=int, default=4096, help="max new tokens per reply")
    g.add_argument("--seed", type=int, default=0, help="base seed; each (row, attempt) derives its own")
    g.add_argument("--max-retries", type=int, default=3, help="extra attempts after a rejected reply")
    g.add_argument(
        "--no-number-check",
        action="store_true",
        help="accept rewrites that lose number literals of the original (not recommended)",
    )
    g.add_argument(
        "--on-failure",
        choices=("keep", "drop"),
        default="keep",
        help="a row without an acceptable rewrite: keep the original question, or drop the row",
    )

    g = parser.add_argument_group("answer check (optional filter, not in the paper)")
    g.add_argument(
        "--check-answers",
        metavar="MODEL",
        default=None,
        help="solve both views with MODEL and flag pairs whose majority answers differ",
    )
    g.add_argument(
        "--check-backend",
        choices=("hf", "vllm", "api"),
        default="hf",
        help="how MODEL runs (api: at --api-base)",
    )
    g.add_argument("--check-k", type=int, default=4, help="samples per view")
    g.add_argument("--check-temperature", type=float, default=0.6)
    g.add_argument("--check-max-tokens", type=int, default=3072)
    g.add_argument("--drop-disagreeing", action="store_true", help="drop pairs whose majority answers differ")

    g = parser.add_argument_group("files and progress")
    g.add_argument("--log", default=None, help="raw generation log (default: OUT-stem.log.jsonl)")
    g.add_argument("--state", default=None, help="resume state (default: OUT-stem.state.jsonl)")
    g.add_argument(
        "--restart", action="store_true", help="discard the resume state (and the log) and start over"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def sidecar(out: Path, suffix: str) -> Path:
    """``dir/name.parquet`` → ``dir/name{suffix}``."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(stem + suffix)


def _validate(args: argparse.Namespace) -> None:
    if args.backend is None:
        args.backend = "api" if args.api_base else "hf"
    if args.backend == "api" and not args.api_base:
        raise ConfigError("--backend api needs --api-base URL (e.g. http://localhost:8000/v1)")
    if args.check_backend == "api" and args.check_answers and not args.api_base:
        raise ConfigError("--check-backend api needs --api-base URL")
    if args.drop_disagreeing and not args.check_answers:
        raise ConfigError("--drop-disagreeing needs --check-answers MODEL (nothing is checked otherwise)")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: expected a positive integer, got {args.limit}")
    for name in ("batch_size", "max_tokens", "check_max_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}"
            )
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError(f"--concurrency: expected a positive integer, got {args.concurrency}")
    if args.request_timeout <= 0:
        raise ConfigError(f"--request-timeout: expected seconds > 0, got {args.request_timeout}")
    if args.http_retries < 0:
        raise ConfigError(f"--http-retries: expected 0 or more, got {args.http_retries}")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; expected a parquet file path")


class _BackendFactory:
    """Builds backends on demand and shares one local model between rewriting and checking."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._local: dict[tuple[str, str], Any] = {}

    def build(self, kind: str, model: str, concurrency: int | None) -> Any:
        from corewarding.rephrase.backends import (
            BatchingBackend,
            EngineRunner,
            OpenAIChatBackend,
            parse_json_option,
        )

        a = self.args
        if kind == "api":
            key = os.environ.get(a.api_key_env) if a.api_key_env else None
            tokenizer = None
            if a.tokenizer:
                from corewarding.models.loading import load_tokenizer

                tokenizer = load_tokenizer(a.tokenizer)
            return OpenAIChatBackend(
                a.api_base,
                model,
                api_key=key,
                concurrency=concurrency or OpenAIChatBackend.default_concurrency,
                request_timeout=a.request_timeout,
                max_http_retries=a.http_retries,
                backoff_base=a.backoff,
                extra_body=parse_json_option("--extra-body", a.extra_body),
                tokenizer=tokenizer,
            )
        cache_key = (kind, model)
        if cache_key not in self._local:
            if kind == "hf":
                from corewarding.rollout.hf_engine import HFRolloutEngine

                engine = HFRolloutEngine.from_pretrained(
                    model, device=a.device, dtype=a.dtype, batch_size=a.batch_size
                )
                runner = EngineRunner(engine, model)
            else:
                from corewarding.rollout.vllm_engine import VLLMRolloutEngine

                engine = VLLMRolloutEngine.from_pretrained(model, dtype=a.dtype or "auto", seed=a.seed)
                runner = EngineRunner(engine, model, seeds_per_call=False)
            max_batch = concurrency or (4096 if kind == "vllm" else a.batch_size)
            self._local[cache_key] = BatchingBackend(runner, max_batch=max_batch)
        return self._local[cache_key]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from corewarding.data import load_questions
    from corewarding.data.writers import save_questions_parquet
    from corewarding.rephrase.journal import JsonlWriter
    from corewarding.rephrase.pipeline import (
        STATE_VERSION,
        Progress,
        RephraseSettings,
        RowProcessor,
        assemble,
        load_state,
        questions_fingerprint,
        run_rows,
        summarize,
    )
    from corewarding.rephrase.prompt import load_instruction

    started = time.perf_counter()
    _validate(args)
    out = Path(args.out).expanduser()
    log_path = Path(args.log) if args.log else sidecar(out, ".log.jsonl")
    state_path = Path(args.state) if args.state else sidecar(out, ".state.jsonl")
    summary_path = sidecar(out, ".summary.json")
    original_out = sidecar(out, ".original.parquet")

    settings = RephraseSettings(
        instruction=load_instruction(args.prompt_file),
        sampling=SamplingParams(
            temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_tokens
        ),
        max_retries=args.max_retries,
        seed=args.seed,
        check_numbers=not args.no_number_check,
        check_k=args.check_k,
        check_sampling=SamplingParams(
            temperature=args.check_temperature, top_p=0.95, max_new_tokens=args.check_max_tokens
        ),
    )
    questions = load_questions(args.input, split=args.split, limit=args.limit)
    header = {
        "type": "header",
        "version": STATE_VERSION,
        "rows": len(questions),
        "input_fingerprint": questions_fingerprint(questions),
        "settings": settings.fingerprint(
            f"{args.backend}:{args.model}",
            f"{args.check_backend}:{args.check_answers}" if args.check_answers else None,
        ),
        "created": time.time(),
    }
    if args.restart:  # the old log describes attempts whose results are being discarded
        log_path.unlink(missing_ok=True)
    state = load_state(state_path, header, len(questions), restart=args.restart)
    resumed = len(state.rows)
    todo = [i for i in range(len(questions)) if i not in state.rows]
    if resumed:
        print(f"resuming: {resumed} of {len(questions)} rows already done ({state_path})", file=sys.stderr)

    if todo:
        factory = _BackendFactory(args)
        backend = factory.build(args.backend, args.model, args.concurrency)
        check_backend = (
            factory.build(args.check_backend, args.check_answers, args.concurrency)
            if args.check_answers
            else None
        )
        concurrency = args.concurrency or backend.default_concurrency
        counts = Progress()
        bar = tqdm(
            total=len(questions), initial=resumed, unit="row", desc="rephrase", disable=args.no_progress,
            dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip

        def on_done(record: dict[str, Any]) -> None:
            state.rows[record["row"]] = record
            counts.ok += record["status"] == "ok"
            counts.failed += record["status"] != "ok"
            counts.retries += record["attempts"] - 1
            bar.set_postfix(ok=counts.ok, failed=counts.failed, retries=counts.retries, refresh=False)
            bar.update(1)

        async def go() -> None:
            try:
                with JsonlWriter(log_path, durable=False) as log, JsonlWriter(state_path, durable=True) as st:
                    processor = RowProcessor(backend, settings, log, check_backend)
                    await run_rows(questions, todo, processor, st, concurrency, on_done)
            finally:
                await backend.aclose()
                if check_backend is not None and check_backend is not backend:
                    await check_backend.aclose()

        try:
            asyncio.run(go())
        finally:
            bar.close()

    assembled = assemble(
        questions, state.rows, on_failure=args.on_failure, drop_disagreeing=args.drop_disagreeing
    )
    summary = summarize(state.rows, assembled, resumed_rows=resumed, seconds=time.perf_counter() - started)
    write_original = args.on_failure == "drop" or args.drop_disagreeing
    summary = {
        "input": str(args.input),
        "output": str(out),
        "original_output": str(original_out) if write_original else None,
        "log": str(log_path),
        "state": str(state_path),
        "backend": args.backend,
        "model": args.model,
        "check_model": args.check_answers,
        "check_k": args.check_k if args.check_answers else None,
        "on_failure": args.on_failure,
        **summary,
    }
    if not assembled.rephrased:
        _write_json_atomic(summary_path, summary)
        _print_summary(summary, summary_path)
        raise CorewardingError(
            f"all {len(questions)} rows were dropped; nothing to write to {out} (reasons in {summary_path})"
        )
    save_questions_parquet(assembled.rephrased, out)
    if write_original:
        save_questions_parquet(assembled.originals, original_out)
    _write_json_atomic(summary_path, summary)
    _print_summary(summary, summary_path)
    return 0


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _print_summary(s: dict[str, Any], path: Path) -> None:
    lines = [
        f"rephrased {s['rows']} rows with {s['model']}: {s['successes']} ok, {s['failures']} failed "
        f"({s['kept_original']} kept as original, {s['dropped']} dropped)",
        f"  attempts {s['attempts']} (retries {s['retries']}), http retries {s['http_retries']}, "
        f"attempt statuses {s['attempt_statuses']}",
        f"  tokens: prompt {s['tokens']['prompt']}, completion {s['tokens']['completion']}; "
        f"{s['seconds']:.1f}s this run ({s['rows_this_run']} rows, {s['rows_per_second']} rows/s; "
        f"{s['resumed_rows']} resumed)",
    ]
    if s["answer_check"]:
        c = s["answer_check"]
        lines.append(
            f"  answer check (k={s['check_k']}): {c['checked']} checked, {c['agree']} agree, "
            f"{c['disagree']} disagree, {c['undetermined']} undetermined, {c['dropped']} dropped"
        )
    if s["dropped_rows"]:
        shown = ", ".join(f"row {d['row']} ({d['reason']})" for d in s["dropped_rows"][:5])
        more = len(s["dropped_rows"]) - 5
        lines.append(f"  dropped: {shown}" + (f" and {more} more" if more > 0 else ""))
    lines.append(
        f"  → {s['output']}"
        + (f" + {s['original_output']}" if s["original_output"] else "")
        + f"; summary {path}"
    )
    print("\n".join(lines))
