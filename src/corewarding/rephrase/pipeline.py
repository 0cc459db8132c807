"""Rephrase a list of questions row by row: attempts, retries, the optional answer check, resumable state.

Each row is one asyncio task (at most ``concurrency`` at a time). A row tries up to ``1 + max_retries``
replies, each sampled with its own seed derived from (``seed``, row, attempt) so a rerun asks the same
things; every reply goes to the generation log with its verdict. The first accepted reply ends the row;
if none is accepted the row is a recorded failure — never an accepted bad rewrite — and falls back to its
original question in the output. With an answer-check backend, an accepted pair is then solved
``check_k`` times per view and the two majority answers compared.

A finished row is appended to the state file (fsync'd, through :class:`corewarding.files.JsonlAppender`)
before it counts as done; on restart the rows in the state are skipped. A row that fell back is recorded
but *not* done: its failure may have been the server's (a misconfigured model, ``content: null``), so a
rerun tries it again, continuing the attempt numbers (new seeds), unless ``keep_fallbacks`` accepts it. The
state begins with a header describing the input and the settings; resuming with a different input or
different settings is refused, so one output never mixes two configurations.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corewarding.data.question import Question
from corewarding.errors import ConfigError, DataError
from corewarding.files import JsonlAppender, append_jsonl, read_jsonl
from corewarding.rephrase.backends import Backend, Completion, with_seed
from corewarding.rephrase.judge import NO_CONTENT, Verdict, judge_reply
from corewarding.rephrase.prompt import build_messages, instruction_digest
from corewarding.rollout.types import SamplingParams

STATE_VERSION = 1
ROW_OK = "ok"
ROW_FAILED = "failed"


@dataclass
class RephraseSettings:
    """Everything that decides what a row's result is (and so must match when resuming)."""

    instruction: str
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.8, max_new_tokens=4096)
    )
    max_retries: int = 3
    seed: int = 0
    check_numbers: bool = True
    check_k: int = 4
    check_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=3072)
    )

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries: expected 0 or more, got {self.max_retries}")
        if self.check_k < 1:
            raise ConfigError(f"--check-k: expected a positive integer, got {self.check_k}")

    def fingerprint(self, model: str, check_model: str | None) -> dict[str, Any]:
        """The settings as stored in the state header (the instruction by digest)."""
        out: dict[str, Any] = {
            "model": model,
            "instruction": instruction_digest(self.instruction),
            "sampling": _sampling_dict(self.sampling),
            "max_retries": self.max_retries,
            "seed": self.seed,
            "check_numbers": self.check_numbers,
            "check_model": check_model,
        }
        if check_model is not None:
            out["check_k"] = self.check_k
            out["check_sampling"] = _sampling_dict(self.check_sampling)
        return out


def _sampling_dict(s: SamplingParams) -> dict[str, Any]:
    d = asdict(s)
    d.pop("seed", None)
    return d


def attempt_seed(seed: int, row: int, attempt: int, purpose: str = "rephrase") -> int:
    """A deterministic 31-bit seed per (run seed, row, attempt, purpose): reruns ask the same question."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{row}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def questions_fingerprint(questions: list[Question]) -> str:
    """Hash of what the output depends on in the input: order, indices, questions and golds."""
    h = hashlib.sha256()
    for q in questions:
        h.update(json.dumps([q.extra.get("index"), q.question, q.gold], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def rephrased_question(original: Question, rewrite: str) -> Question:
    """``original`` with its last user message replaced by ``rewrite`` (system prompt and metadata kept)."""
    messages = copy.deepcopy(original.messages)
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = rewrite
            break
    return Question(
        id=original.id,
        question=rewrite,
        messages=messages,
        gold=original.gold,
        source=original.source,
        extra=copy.deepcopy(original.extra),
    )


# ------------------------------------------------------------------------------------------- state


@dataclass
class RunState:
    """The state file's results: the latest record of every row that has one, and which rows are done.

    ``rows`` holds fallbacks too (they are part of this run's output); ``done`` says which rows a run
    skips: accepted rewrites always, fallbacks only with ``keep_fallbacks``. ``next_attempt`` is where a
    retried row's attempt numbers (and so its seeds) continue.
    """

    path: Path
    header: dict[str, Any]
    rows: dict[int, dict[str, Any]]
    done: set[int] = field(default_factory=set)
    next_attempt: dict[int, int] = field(default_factory=dict)
    torn_line: bool = False
    duplicates: int = 0

    @property
    def fallbacks_to_retry(self) -> list[int]:
        """Rows whose latest result fell back to the original question and that this run tries again."""
        return sorted(row for row in self.rows if row not in self.done)


# field -> (accepted types, what it should be) of a row record in the state file
_ROW_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "status": ((str,), "'ok' or 'failed'"),
    "attempts": ((int,), "a positive integer"),
    "attempt_statuses": ((list,), "a list of attempt statuses"),
    "http_retries": ((int,), "an integer >= 0"),
    "reason": ((str,), "a string"),
    "prompt_tokens": ((int,), "an integer >= 0"),
    "completion_tokens": ((int,), "an integer >= 0"),
}


def _check_row_record(rec: dict[str, Any], path: Path, line: int, n_rows: int) -> int:
    """The row number of a state record, or a DataError naming the line and the field that is wrong.

    A hand-edited or foreign file must fail here, with its line, not later as a KeyError in the summary.
    """
    row = rec.get("row")
    if rec.get("type") != "row" or not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < n_rows:
        raise DataError(
            f"{path}: line {line}: expected a row record with 'row' in [0, {n_rows}), got {rec!r:.160}"
        )
    for name, (types, expected) in _ROW_FIELDS.items():
        value = rec.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise DataError(
                f"{path}: line {line}: row {row}: field '{name}': expected {expected}, got {value!r:.80}"
            )
    ok = rec["status"] == ROW_OK
    if (
        rec["status"] not in (ROW_OK, ROW_FAILED)
        or rec["attempts"] < 1
        or len(rec["attempt_statuses"]) != rec["attempts"]
        or (ok and not isinstance(rec.get("rewrite"), str))
        or not isinstance(rec.get("answer_check"), dict | None)
    ):
        raise DataError(
            f"{path}: line {line}: row {row}: expected status 'ok' (with a rewrite) or 'failed', attempts >= 1 "
            f"with one status each, answer_check an object or null; got status {rec['status']!r}, attempts "
            f"{rec['attempts']!r}, {len(rec['attempt_statuses'])} statuses, rewrite {rec.get('rewrite')!r:.60}"
        )
    return row


def load_state(
    path: Path, header: dict[str, Any], n_rows: int, restart: bool, keep_fallbacks: bool = False
) -> RunState:
    """Read the state file for this run (or start a new one); refuse a state made for something else.

    The file is read under the one JSONL rule (:func:`corewarding.files.read_jsonl`): a torn last line
    left by a kill is dropped (and reported), damage anywhere else is a DataError naming the line.
    """
    if restart and path.exists():
        path.unlink()
    contents = read_jsonl(path, what="rephrase state records")
    if not contents.rows:
        append_jsonl(path, [header], durable=True)
        return RunState(path, header, {}, torn_line=contents.torn)
    first = contents.rows[0]
    if first.get("type") != "header":
        raise DataError(
            f"{path}: line {contents.line_numbers[0]}: expected the state header, got {json.dumps(first)[:120]}"
        )
    differing = sorted(
        k for k in set(first) | set(header) if k not in ("type", "created") and first.get(k) != header.get(k)
    )
    if differing:
        details = "; ".join(f"{k}: state {first.get(k)!r} vs now {header.get(k)!r}" for k in differing)
        raise ConfigError(
            f"{path} was written by a run with a different input or settings ({details}); rerun with the "
            "original options to resume, or pass --restart to discard it"
        )
    state = RunState(path, first, {}, torn_line=contents.torn)
    for line, rec in zip(contents.line_numbers[1:], contents.rows[1:], strict=True):
        row = _check_row_record(rec, path, line, n_rows)
        if row in state.rows and state.rows[row]["status"] == ROW_OK:
            state.duplicates += 1  # cannot happen with one writer; an accepted rewrite is final
            continue
        state.rows[row] = rec  # a later result supersedes a fallback
        state.next_attempt[row] = state.next_attempt.get(row, 0) + rec["attempts"]
    state.done = {r for r, rec in state.rows.items() if rec["status"] == ROW_OK or keep_fallbacks}
    return state


# ---------------------------------------------------------------------------------------- one row


@dataclass
class Progress:
    """Counters for the progress bar (this run only)."""

    ok: int = 0
    failed: int = 0
    retries: int = 0


class RowProcessor:
    """Runs the attempts (and the answer check) of one row and logs every generation."""

    def __init__(
        self,
        backend: Backend,
        settings: RephraseSettings,
        log: JsonlAppender,
        check_backend: Backend | None = None,
    ):
        self.backend = backend
        self.settings = settings
        self.log = log
        self.check_backend = check_backend

    async def process(self, row: int, question: Question, first_attempt: int = 0) -> dict[str, Any]:
        """Try ``question`` until a reply is accepted or the attempts run out; the row's state record.

        ``first_attempt`` > 0 continues a row that fell back in an earlier run, with fresh seeds.
        """
        s = self.settings
        messages = build_messages(s.instruction, question.question)
        record: dict[str, Any] = {
            "type": "row",
            "row": row,
            "index": question.extra.get("index"),
            "first_attempt": first_attempt,
            "status": ROW_FAILED,
            "rewrite": None,
            "attempts": 0,
            "http_retries": 0,
            "attempt_statuses": [],
            "reason": "",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "tokens_unknown": 0,
            "answer_check": None,
        }
        for attempt in range(first_attempt, first_attempt + s.max_retries + 1):
            seed = attempt_seed(s.seed, row, attempt)
            verdict, completion, reply, http_retries = await self._attempt(messages, seed, question.question)
            record["attempts"] += 1
            record["http_retries"] += http_retries
            record["attempt_statuses"].append(verdict.status)
            self._add_tokens(record, completion)
            self.log.write(
                [
                    {
                        "kind": "rephrase",
                        "row": row,
                        "index": question.extra.get("index"),
                        "attempt": attempt,
                        "seed": seed,
                        "sampler_seed": completion.seed if completion is not None else None,
                        "status": verdict.status,
                        "reason": verdict.reason,
                        "reply": reply,
                        "http_retries": http_retries,
                        "prompt_tokens": completion.prompt_tokens if completion else None,
                        "completion_tokens": completion.completion_tokens if completion else None,
                        "latency_s": round(completion.latency_s, 4) if completion else None,
                        "time": time.time(),
                    }
                ]
            )
            if verdict.ok:
                record["status"] = ROW_OK
                record["rewrite"] = verdict.rewrite
                record["reason"] = ""
                break
            record["reason"] = verdict.reason
        if record["status"] == ROW_OK and self.check_backend is not None:
            record["answer_check"] = await self._check(row, question, record["rewrite"])
        return record

    async def _attempt(
        self, messages: list[dict[str, str]], seed: int, original: str
    ) -> tuple[Verdict, Completion, str | None, int]:
        """One reply and its verdict. A backend failure that retrying cannot fix propagates: the run stops."""
        sampling = with_seed(self.settings.sampling, seed)
        completion = await self.backend.complete(messages, n=1, sampling=sampling)
        reply = completion.texts[0] if completion.texts else ""
        if reply is None:
            finish = completion.finish_reasons[0] if completion.finish_reasons else None
            why = f", finish_reason {finish!r}" if finish else ""
            verdict = Verdict(NO_CONTENT, None, f"the server replied with content: null (no text{why})")
        else:
            verdict = judge_reply(original, reply, check_numbers=self.settings.check_numbers)
        return verdict, completion, reply, completion.http_retries

    @staticmethod
    def _add_tokens(record: dict[str, Any], completion: Completion | None) -> None:
        if completion is None:
            return
        if completion.prompt_tokens is None or completion.completion_tokens is None:
            record["tokens_unknown"] += 1
        record["prompt_tokens"] += completion.prompt_tokens or 0
        record["completion_tokens"] += completion.completion_tokens or 0

    async def _check(self, row: int, question: Question, rewrite: str) -> dict[str, Any]:
        """Solve both views ``check_k`` times; compare the majority answers.

        A view whose samples contain no answer has no majority; then the pair is neither agreeing nor
        disagreeing (``agree`` is None) and no filter drops it. A request the server refuses stops the run
        (see ``backends``) rather than leaving every pair undetermined.
        """
        assert self.check_backend is not None
        s = self.settings
        seed = attempt_seed(s.seed, row, 0, purpose="check")
        sampling = with_seed(s.check_sampling, seed)
        views = {"original": question, "rephrased": rephrased_question(question, rewrite)}

        async def sample(q: Question) -> Completion:
            assert self.check_backend is not None
            return await self.check_backend.complete(q.messages, n=s.check_k, sampling=sampling)

        results = dict(zip(views, await asyncio.gather(*(sample(q) for q in views.values())), strict=True))
        texts = {v: [t or "" for t in r.texts] for v, r in results.items()}
        verdict = await asyncio.to_thread(_majorities, texts["original"], texts["rephrased"])
        for view, result in results.items():
            answers, majority, votes = verdict[view]
            self.log.write(
                [
                    {
                        "kind": f"check_{view}",
                        "row": row,
                        "index": question.extra.get("index"),
                        "seed": seed,
                        "sampler_seed": result.seed,
                        "replies": texts[view],
                        "answers": answers,
                        "majority": majority,
                        "votes": votes,
                        "prompt_tokens": result.prompt_tokens,
                        "completion_tokens": result.completion_tokens,
                        "time": time.time(),
                    }
                ]
            )
        return {
            "original_majority": verdict["original"][1],
            "rephrased_majority": verdict["rephrased"][1],
            "original_votes": verdict["original"][2],
            "rephrased_votes": verdict["rephrased"][2],
            "k": s.check_k,
            "agree": verdict["agree"],
            "prompt_tokens": sum(c.prompt_tokens or 0 for c in results.values()),
            "completion_tokens": sum(c.completion_tokens or 0 for c in results.values()),
        }


def _majorities(original_texts: list[str], rephrased_texts: list[str]) -> dict[str, Any]:
    """Extracted answers, majority and votes per view, and whether the majorities are equivalent."""
    from corewarding.answers import extract_answer, is_equivalent, vote

    out: dict[str, Any] = {}
    for view, texts in (("original", original_texts), ("rephrased", rephrased_texts)):
        answers = [extract_answer(t) for t in texts]
        majority, votes = vote(answers) if answers else (None, 0)
        out[view] = (answers, majority, votes)
    a, b = out["original"][1], out["rephrased"][1]
    out["agree"] = None if a is None or b is None else bool(is_equivalent(a, b))
    return out


# ------------------------------------------------------------------------------------------ driver


class GroupCommit:
    """Makes finished rows durable without stalling the event loop.

    An fsync takes milliseconds; done inline for every row it would serialise the whole pipeline behind
    the disk. Rows queue up here and a background task writes everything queued with one fsync in a
    worker thread; ``write`` returns only once its record is on disk, so "done" still means durable.
    """

    def __init__(self, writer: JsonlAppender):
        self.writer = writer
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def write(self, record: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, future))
        await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self.writer.write, [record for record, _ in batch])
            except Exception as err:  # disk full, ...: every waiting row fails and the run stops
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def run_rows(
    questions: list[Question],
    todo: list[int],
    processor: RowProcessor,
    state: JsonlAppender,
    concurrency: int,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    first_attempts: dict[int, int] | None = None,
) -> None:
    """Process the rows in ``todo`` with at most ``concurrency`` in flight; persist each as it finishes.

    ``first_attempts`` continues rows retried after a fallback (see :meth:`RowProcessor.process`). The
    first fatal error (the endpoint is gone, or refuses the requests) cancels the other rows and
    propagates; every row already written to the state stays written; a row whose attempts were cut short
    is not written, so a rerun does it again.
    """
    starts = first_attempts or {}
    queue = list(reversed(todo))
    commit = GroupCommit(state)

    async def worker() -> None:
        while queue:
            row = queue.pop()
            record = await processor.process(row, questions[row], starts.get(row, 0))
            await commit.write(record)
            if on_done is not None:
                on_done(record)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(todo)))):
                group.create_task(worker())
    except BaseExceptionGroup as eg:
        first = _first_real(eg)
        raise first from None
    finally:
        await commit.aclose()


def _first_real(eg: BaseExceptionGroup) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_real(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


# ----------------------------------------------------------------------------------------- results


@dataclass
class Assembled:
    """The aligned outputs: rephrased rows, the matching original rows, and what was dropped and why."""

    rephrased: list[Question]
    originals: list[Question]
    dropped: list[dict[str, Any]]
    kept_original: int


def assemble(
    questions: list[Question],
    records: dict[int, dict[str, Any]],
    *,
    on_failure: str = "keep",
    drop_disagreeing: bool = False,
) -> Assembled:
    """Build the rephrased questions in input order from finished row records.

    A failed row becomes the original question (``on_failure="keep"``, marked ``rephrase_status:
    "failed"``) or is dropped (``"drop"``); with ``drop_disagreeing`` a pair whose check majorities differ
    is dropped too. ``originals`` holds the original question of every row kept, so both lists align.
    """
    if on_failure not in ("keep", "drop"):
        raise ConfigError(f"--on-failure: expected 'keep' or 'drop', got {on_failure!r}")
    missing = [i for i in range(len(questions)) if i not in records]
    if missing:
        raise DataError(
            f"{len(missing)} row(s) have no result (first: row {missing[0]}); the run is incomplete"
        )
    rephrased: list[Question] = []
    originals: list[Question] = []
    dropped: list[dict[str, Any]] = []
    kept_original = 0
    for i, q in enumerate(questions):
        rec = records[i]
        check = rec.get("answer_check")
        if rec["status"] == ROW_OK:
            if drop_disagreeing and check is not None and check.get("agree") is False:
                dropped.append({"row": i, "index": rec.get("index"), "reason": "answer check disagrees"})
                continue
            new = rephrased_question(q, rec["rewrite"])
            status = "ok"
        else:
            if on_failure == "drop":
                dropped.append(
                    {"row": i, "index": rec.get("index"), "reason": f"rephrase failed: {rec['reason']}"}
                )
                continue
            new = rephrased_question(q, q.question)
            status = "failed"
            kept_original += 1
        info = dict(new.extra.get("extra_info") or {})
        info["index"] = new.extra.get("index", i)
        info["original_question"] = q.question
        info["rephrase_status"] = status
        if check is not None:
            info["answer_check"] = {
                "original_majority": check.get("original_majority"),
                "rephrased_majority": check.get("rephrased_majority"),
                "agree": check.get("agree"),
            }
        new.extra["extra_info"] = info
        rephrased.append(new)
        originals.append(q)
    return Assembled(rephrased, originals, dropped, kept_original)


def summarize(
    records: dict[int, dict[str, Any]],
    assembled: Assembled,
    *,
    resumed_rows: int,
    seconds: float,
) -> dict[str, Any]:
    """Counts over all rows (resumed ones included) for the printed and saved summary."""
    recs = [records[i] for i in sorted(records)]
    failed = [r for r in recs if r["status"] != ROW_OK]
    attempt_statuses: Counter[str] = Counter(s for r in recs for s in r["attempt_statuses"])
    checks = [r["answer_check"] for r in recs if r.get("answer_check") is not None]
    done_now = len(recs) - resumed_rows
    summary: dict[str, Any] = {
        "rows": len(recs),
        "successes": len(recs) - len(failed),
        "failures": len(failed),
        "kept_original": assembled.kept_original,
        "dropped": len(assembled.dropped),
        "written": len(assembled.rephrased),
        "attempts": sum(r["attempts"] for r in recs),
        "retries": sum(r["attempts"] - 1 for r in recs),
        "http_retries": sum(r["http_retries"] for r in recs),
        "attempt_statuses": dict(sorted(attempt_statuses.items())),
        "failure_reasons": dict(Counter(r["attempt_statuses"][-1] for r in failed)),
        "tokens": {
            "prompt": sum(r["prompt_tokens"] for r in recs),
            "completion": sum(r["completion_tokens"] for r in recs),
            "requests_without_usage": sum(r.get("tokens_unknown", 0) for r in recs),
        },
        "answer_check": None,
        "resumed_rows": resumed_rows,
        "rows_this_run": done_now,
        "seconds": round(seconds, 3),
        "rows_per_second": round(done_now / seconds, 3) if seconds > 0 else None,
        "dropped_rows": assembled.dropped,
    }
    if checks:
        summary["answer_check"] = {
            "checked": len(checks),
            "agree": sum(1 for c in checks if c.get("agree") is True),
            "disagree": sum(1 for c in checks if c.get("agree") is False),
            "undetermined": sum(1 for c in checks if c.get("agree") is None),
            "dropped": sum(1 for d in assembled.dropped if d["reason"] == "answer check disagrees"),
            "tokens": {
                "prompt": sum(c.get("prompt_tokens", 0) for c in checks),
                "completion": sum(c.get("completion_tokens", 0) for c in checks),
            },
        }
    return summary
