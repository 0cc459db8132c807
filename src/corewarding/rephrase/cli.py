"""Build the rephrased view of a question set (Co-rewarding-I's second view).

``corewarding rephrase INPUT --out OUT.parquet`` asks a model to rewrite every question with the paper's
instruction and writes a verl parquet aligned row by row with INPUT (same ground truth, same
``extra_info.index``, plus ``extra_info.original_question`` and ``extra_info.rephrase_status``), so that
``load_pairs(INPUT, OUT)`` pairs them. Beside OUT it keeps:

* ``OUT-stem.log.jsonl`` — every raw generation (row, attempt, seed, reply, status, reason, tokens);
* ``OUT-stem.state.jsonl`` — finished rows; rerunning the same command resumes from it. A row that fell
  back to its original question (no acceptable rewrite) is recorded but not done: a rerun tries it again
  with new seeds, unless ``--keep-fallbacks`` accepts it;
* ``OUT-stem.summary.json`` — the counts printed at the end;
* ``OUT-stem.original.parquet`` — with ``--on-failure drop`` or ``--drop-disagreeing``: the original rows
  that were kept, aligned with OUT (the pair to give ``load_pairs``).

A run whose rows all fell back exits with an error quoting the last failure, and a request the server
refuses for good (wrong ``--model``, missing key: HTTP 4xx other than 408/409/425/429) stops the run with
the server's message: neither yields an "output" that is silently the input.

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
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from corewarding.arguments import (
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    OPEN_FRACTION,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TEMPERATURE,
)
from corewarding.errors import ConfigError, CorewardingError
from corewarding.rephrase.backends import (
    BACKOFF_MAX_S,
    BACKOFF_S,
    CONNECT_TIMEOUT_S,
    GIVE_UP_AFTER_S,
    HTTP_RETRIES,
    REQUEST_TIMEOUT_S,
    give_up_bound,
)
from corewarding.rollout.types import SamplingParams


def _give_up_text() -> str:
    """The defaults' worst cases, computed from the same constants the backend uses (so help never lies)."""
    never = give_up_bound()
    refused = sum(min(BACKOFF_MAX_S, BACKOFF_S * 2**k) for k in range(HTTP_RETRIES))
    return textwrap.fill(
        f"With the defaults a server that accepts connections but never answers stops the run after at most "
        f"{never:g} s ({never / 60:g} min); one that refuses connections within about {refused:g} s (one that "
        f"drops them: {(HTTP_RETRIES + 1) * CONNECT_TIMEOUT_S + refused:g} s). A refusal that retrying cannot "
        "fix (HTTP 4xx other than 408/409/425/429: wrong --model, missing key) stops it at once.",
        width=100,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 2)[2] if __doc__ else None
    parser.add_argument(
        "input", help="question set: verl parquet, benchmark JSONL, dataset folder/name, shared:..."
    )
    parser.add_argument("--out", required=True, help="output parquet (verl layout, aligned with INPUT)")
    parser.add_argument("--split", default=None, help="dataset split (for dataset inputs)")
    parser.add_argument("--limit", type=POSITIVE_INT, default=None, help="only the first N rows of INPUT")

    g = parser.add_argument_group("backend", _give_up_text())
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
        type=POSITIVE_INT,
        default=None,
        help="rows in flight (default: 8 for api, --batch-size for local models)",
    )
    g.add_argument(
        "--batch-size", type=POSITIVE_INT, default=16, help="local models: sequences per generate call"
    )
    g.add_argument(
        "--request-timeout",
        type=POSITIVE_FLOAT,
        default=REQUEST_TIMEOUT_S,
        help=f"seconds one HTTP try may take, connect to last byte (default {REQUEST_TIMEOUT_S:g}: a 32B model "
        "writing 4k tokens at 25 tokens/s fits)",
    )
    g.add_argument(
        "--connect-timeout",
        type=POSITIVE_FLOAT,
        default=CONNECT_TIMEOUT_S,
        help=f"seconds to open a connection (default {CONNECT_TIMEOUT_S:g})",
    )
    g.add_argument(
        "--http-retries",
        type=NONNEGATIVE_INT,
        default=HTTP_RETRIES,
        help="retries of one HTTP request on 408/409/425/429/5xx, connection errors and timeouts before the "
        f"run stops (default {HTTP_RETRIES})",
    )
    g.add_argument(
        "--backoff",
        type=NONNEGATIVE_FLOAT,
        default=BACKOFF_S,
        help=f"first backoff delay in seconds (doubles each retry, at most {BACKOFF_MAX_S:g} s)",
    )
    g.add_argument(
        "--give-up-after",
        type=POSITIVE_FLOAT,
        default=GIVE_UP_AFTER_S,
        help=f"seconds one HTTP request may spend on all its tries and waits before the run stops (default "
        f"{GIVE_UP_AFTER_S:g}; the worst case of a never-answering server is the smaller of this and "
        "(retries + 1) x --request-timeout + the backoffs)",
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
    g.add_argument("--temperature", type=TEMPERATURE, default=0.7)
    g.add_argument("--top-p", type=OPEN_FRACTION, default=0.8)
    g.add_argument("--max-tokens", type=POSITIVE_INT, default=4096, help="max new tokens per reply")
    g.add_argument("--seed", type=SEED, default=0, help="base seed; each (row, attempt) derives its own")
    g.add_argument(
        "--max-retries", type=NONNEGATIVE_INT, default=3, help="extra attempts after a rejected reply"
    )
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
    g.add_argument(
        "--keep-fallbacks",
        action="store_true",
        help="count rows that fell back to the original question (every attempt failed: unparsable, lost "
        "numbers, content: null, ...) as done, so a rerun does not try them again. Without it they are "
        "recorded but not done: the same command retries them with new seeds",
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
    g.add_argument("--check-k", type=POSITIVE_INT, default=4, help="samples per view")
    g.add_argument("--check-temperature", type=TEMPERATURE, default=0.6)
    g.add_argument("--check-max-tokens", type=POSITIVE_INT, default=3072)
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


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """Every file the run writes, by the setting that names it (the sidecars follow ``--out``)."""
    out = Path(args.out).expanduser()
    paths = {
        "--out": out,
        "--log": Path(args.log).expanduser() if args.log else sidecar(out, ".log.jsonl"),
        "--state": Path(args.state).expanduser() if args.state else sidecar(out, ".state.jsonl"),
        "the summary": sidecar(out, ".summary.json"),
    }
    if args.on_failure == "drop" or args.drop_disagreeing:
        paths["the original-rows output"] = sidecar(out, ".original.parquet")
    return paths


def check_output_paths(source: str, paths: dict[str, Path]) -> None:
    """Refuse, before any work, outputs that would overwrite the input or each other, or cannot be written.

    The input is compared as a file (through links and other spellings of the same path), because writing
    the output parquet or appending the journal to it would destroy the very questions being rephrased.
    """
    from corewarding.data.paths import resolve_data_path
    from corewarding.files import require_output_file, same_file

    source_path = resolve_data_path(source)
    if source_path.is_file():
        for setting, path in paths.items():
            if same_file(path, source_path):
                raise ConfigError(
                    f"{setting} {str(path)!r} is the input file {source!r}"
                    + (f" ({source_path})" if str(source_path) != source else "")
                    + f"; refusing to overwrite the input: choose another {setting.removeprefix('the ')}"
                )
    named = list(paths.items())
    for i, (a, path_a) in enumerate(named):
        for b, path_b in named[i + 1 :]:
            if same_file(path_a, path_b):
                raise ConfigError(f"{a} and {b} are the same file {str(path_a)!r}; give them different paths")
    for setting, path in paths.items():
        require_output_file(path, setting)


def _validate(args: argparse.Namespace) -> dict[str, Path]:
    """Check the options and the output locations before anything loads; the output paths."""
    from corewarding.rephrase.backends import parse_json_option

    if args.backend is None:
        args.backend = "api" if args.api_base else "hf"
    if args.backend == "api" and not args.api_base:
        raise ConfigError("--backend api needs --api-base URL (e.g. http://localhost:8000/v1)")
    if args.check_backend == "api" and args.check_answers and not args.api_base:
        raise ConfigError("--check-backend api needs --api-base URL")
    if args.api_base and not args.api_base.startswith(("http://", "https://")):
        raise ConfigError(
            f"--api-base: expected an http(s) URL such as http://localhost:8000/v1, got {args.api_base!r}"
        )
    if args.drop_disagreeing and not args.check_answers:
        raise ConfigError("--drop-disagreeing needs --check-answers MODEL (nothing is checked otherwise)")
    args.extra_body_json = parse_json_option("--extra-body", args.extra_body)
    paths = output_paths(args)
    check_output_paths(args.input, paths)
    return paths


class _BackendFactory:
    """Builds backends on demand and shares one local model between rewriting and checking."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._local: dict[tuple[str, str], Any] = {}

    def build(self, kind: str, model: str, concurrency: int | None) -> Any:
        from corewarding.rephrase.backends import BatchingBackend, EngineRunner, OpenAIChatBackend

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
                api_key_env=a.api_key_env,
                concurrency=concurrency or OpenAIChatBackend.default_concurrency,
                request_timeout=a.request_timeout,
                connect_timeout=a.connect_timeout,
                max_http_retries=a.http_retries,
                backoff_base=a.backoff,
                give_up_after=a.give_up_after,
                extra_body=a.extra_body_json,
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
    from corewarding.files import JsonlAppender, atomic_write_json
    from corewarding.rephrase.backends import EndpointUnavailable, RequestRefused
    from corewarding.rephrase.pipeline import (
        ROW_OK,
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
    paths = _validate(args)
    out, log_path, state_path = paths["--out"], paths["--log"], paths["--state"]
    summary_path = paths["the summary"]
    original_out = sidecar(out, ".original.parquet")
    write_original = "the original-rows output" in paths

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
    state = load_state(
        state_path, header, len(questions), restart=args.restart, keep_fallbacks=args.keep_fallbacks
    )
    resumed = len(state.done)
    todo = [i for i in range(len(questions)) if i not in state.done]
    retried = state.fallbacks_to_retry
    if resumed or retried:
        again = (
            f"; retrying {len(retried)} that fell back to the original question (--keep-fallbacks accepts them)"
            if retried
            else ""
        )
        print(
            f"resuming: {resumed} of {len(questions)} rows already done ({state_path}){again}",
            file=sys.stderr,
        )

    counts = Progress()
    last_failure: dict[str, Any] | None = None
    if todo:
        factory = _BackendFactory(args)
        backend = factory.build(args.backend, args.model, args.concurrency)
        check_backend = (
            factory.build(args.check_backend, args.check_answers, args.concurrency)
            if args.check_answers
            else None
        )
        concurrency = args.concurrency or backend.default_concurrency
        bar = tqdm(
            total=len(questions), initial=resumed, unit="row", desc="rephrase", disable=args.no_progress,
            dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip

        def on_done(record: dict[str, Any]) -> None:
            nonlocal last_failure
            state.rows[record["row"]] = record
            counts.ok += record["status"] == ROW_OK
            counts.failed += record["status"] != ROW_OK
            counts.retries += record["attempts"] - 1
            if record["status"] != ROW_OK:
                last_failure = record
            bar.set_postfix(ok=counts.ok, failed=counts.failed, retries=counts.retries, refresh=False)
            bar.update(1)

        async def go() -> None:
            try:
                with (
                    JsonlAppender(log_path, durable=False) as log,
                    JsonlAppender(state_path, durable=True) as st,
                ):
                    processor = RowProcessor(backend, settings, log, check_backend)
                    await run_rows(questions, todo, processor, st, concurrency, on_done, state.next_attempt)
            finally:
                await backend.aclose()
                if check_backend is not None and check_backend is not backend:
                    await check_backend.aclose()

        try:
            asyncio.run(go())
        except (EndpointUnavailable, RequestRefused) as err:
            marked = counts.ok + (counts.failed if args.keep_fallbacks else 0)
            saved = (
                "nothing was marked done"
                if not marked
                else f"{marked} row(s) finished before it are saved; the same command resumes after them"
            )
            raise type(err)(f"{err}; {saved}") from None
        finally:
            bar.close()

    assembled = assemble(
        questions, state.rows, on_failure=args.on_failure, drop_disagreeing=args.drop_disagreeing
    )
    summary = summarize(state.rows, assembled, resumed_rows=resumed, seconds=time.perf_counter() - started)
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
        "keep_fallbacks": args.keep_fallbacks,
        "retried_fallbacks": len(retried),
        "last_failure": _failure_text(last_failure) if last_failure else None,
        **summary,
    }
    ran = counts.ok + counts.failed
    if ran and not counts.ok:
        # A run whose every row fell back is almost always the server's fault (content: null, a wrong
        # chat template...); a parquet of original questions would pass for a rephrased view.
        atomic_write_json(summary_path, summary)
        _print_summary(summary, summary_path)
        fate = (
            f"they are marked done (--keep-fallbacks): rerun to write {out} from them"
            if args.keep_fallbacks
            else "they are not marked done: fix the cause and rerun to retry them (--keep-fallbacks accepts them)"
        )
        raise CorewardingError(
            f"all {ran} rows of this run fell back to the original question; last failure: "
            f"{summary['last_failure']}; {out} was not written; {fate} (details in {summary_path})"
        )
    if not assembled.rephrased:
        atomic_write_json(summary_path, summary)
        _print_summary(summary, summary_path)
        raise CorewardingError(
            f"all {len(questions)} rows were dropped; nothing to write to {out} (reasons in {summary_path})"
        )
    save_questions_parquet(assembled.rephrased, out)
    if write_original:
        save_questions_parquet(assembled.originals, original_out)
    atomic_write_json(summary_path, summary)
    _print_summary(summary, summary_path)
    fallbacks = [r for r in range(len(questions)) if state.rows[r]["status"] != ROW_OK]
    if fallbacks and not args.keep_fallbacks:
        print(
            f"note: {len(fallbacks)} row(s) fell back to the original question and are not marked done "
            f"(first: row {fallbacks[0]}); rerun the same command to retry them, or add --keep-fallbacks to "
            "accept them",
            file=sys.stderr,
        )
    return 0


def _failure_text(record: dict[str, Any]) -> str:
    """``row R: reason`` on one line (a reason may quote a reply)."""
    reason = " ".join(str(record.get("reason") or record["attempt_statuses"][-1]).split())
    return f"row {record['row']}: {reason[:300]}"


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
