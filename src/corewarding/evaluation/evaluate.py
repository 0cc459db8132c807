"""One evaluation function for every caller: the trainer's validation, ``corewarding eval`` and the demo.

Sampling (``generate_completions``) and scoring (``score_completions``) are separate so a resumable caller
can reuse completions it already has and only sample the missing ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from corewarding.answers import batch_equivalent, batch_vote, extract_answer
from corewarding.data.question import Question
from corewarding.evaluation.metrics import summarize
from corewarding.rollout.engine import RolloutEngine
from corewarding.rollout.types import SamplingParams


@dataclass
class Completion:
    """One sampled answer to one question, as stored in per-sample JSONL."""

    question_id: str
    sample_index: int
    completion: str
    num_tokens: int = 0
    truncated: bool = False
    answer: str | None = None
    correct: bool | None = None


@dataclass
class EvalResult:
    """Metrics plus everything needed to inspect them: scored completions and each question's vote.

    ``majority`` maps question id to ``(voted answer or None, number of samples in the winning class)``.
    """

    metrics: dict[str, float]
    completions: list[Completion]
    majority: dict[str, tuple[str | None, int]] = field(default_factory=dict)


def _chunk_seed(seed: int | None, first_question: int, first_sample: int) -> int | None:
    """A seed per engine call that differs between calls and between resumed sample ranges.

    Mixing in the first missing sample index matters: extending a run from n=4 to n=8 samples the same
    questions again for indices 4..7, and re-using the seed of the chunk that made 0..3 would reproduce
    those samples exactly instead of drawing new ones.
    """
    if seed is None:
        return None
    return (seed + first_question + 1_000_003 * first_sample) % (2**31 - 1)


def generate_completions(
    engine: RolloutEngine,
    questions: list[Question],
    n: int,
    sampling: SamplingParams,
    *,
    have: Mapping[str, Iterable[int]] | None = None,
    chunk_questions: int = 16,
    progress: bool = True,
    desc: str = "sampling",
    on_chunk: Callable[[list[Completion]], None] | None = None,
) -> list[Completion]:
    """Sample the completions ``0..n-1`` of each question that ``have`` does not already hold.

    Work goes to the engine in chunks of ``chunk_questions`` questions; ``on_chunk`` receives each
    finished chunk (the resumable caller appends it to disk), and a progress bar counts samples, starting
    at the number already held so its ETA covers only what is left. Questions missing different numbers
    of samples go to the engine in separate calls, since one call draws the same ``n`` for every prompt.
    Returns only the newly sampled completions.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    held = {qid: set(indices) for qid, indices in (have or {}).items()}
    todo: list[tuple[int, Question, list[int]]] = []
    for position, q in enumerate(questions):
        missing = [i for i in range(n) if i not in held.get(q.id, ())]
        if missing:
            todo.append((position, q, missing))
    total = len(questions) * n
    remaining = sum(len(m) for _, _, m in todo)
    out: list[Completion] = []
    bar = tqdm(
        total=total,
        initial=total - remaining,
        desc=desc,
        unit="sample",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for start in range(0, len(todo), max(1, chunk_questions)):
            chunk = todo[start : start + max(1, chunk_questions)]
            made: list[Completion] = []
            by_count: dict[int, list[tuple[int, Question, list[int]]]] = {}
            for item in chunk:
                by_count.setdefault(len(item[2]), []).append(item)
            for count, group in by_count.items():
                params = replace(sampling, seed=_chunk_seed(sampling.seed, group[0][0], group[0][2][0]))
                rollouts = engine.generate([q.messages for _, q, _ in group], count, params)
                if len(rollouts) != len(group) * count:
                    raise RuntimeError(
                        f"engine returned {len(rollouts)} rollouts for {len(group)} prompts x n={count}"
                    )
                for j, r in enumerate(rollouts):
                    _, q, missing = group[j // count]
                    made.append(
                        Completion(
                            question_id=q.id,
                            sample_index=missing[j % count],
                            completion=r.text,
                            num_tokens=r.num_response_tokens,
                            truncated=r.truncated,
                        )
                    )
            out.extend(made)
            if on_chunk is not None:
                on_chunk(made)
            bar.update(len(made))
    finally:
        bar.close()
    return out


def score_completions(
    questions: list[Question],
    completions: list[Completion],
    k: int | None = None,
    exact_vote: bool = False,
    extra_pass_ks: Iterable[int] = (),
    extraction: str = "lenient",
) -> EvalResult:
    """Extract answers, check them against each question's gold, vote, and compute avg@k/pass@k/maj@k.

    ``extraction`` is how answers are read (``extract_answer``'s modes: ``lenient``, or ``boxed``, the
    paper's last-``\\boxed{}``-only rule, under which an unboxed completion has no answer, so it is wrong
    and casts no vote); ``exact_vote`` votes by exact answer string instead of equivalence classes.
    ``extra_pass_ks`` adds pass@j for smaller j from the same samples (see ``metrics.summarize``).
    Completions of questions not in ``questions`` are ignored; ``completions`` is updated in place
    (``answer``, ``correct``). Questions without a gold are skipped in the metrics (their votes are still
    reported).
    """
    by_question: dict[str, list[Completion]] = {q.id: [] for q in questions}
    for c in completions:
        if c.question_id in by_question:
            by_question[c.question_id].append(c)
    for rows in by_question.values():
        rows.sort(key=lambda c: c.sample_index)
        for c in rows:
            c.answer = extract_answer(c.completion, extraction)

    graded = [q for q in questions if q.gold is not None and by_question[q.id]]
    votes = batch_vote([[c.answer for c in by_question[q.id]] for q in questions], exact=exact_vote)
    majority = {q.id: vote for q, vote in zip(questions, votes, strict=True)}
    pairs: list[tuple[str | None, str | None]] = []
    for q in graded:
        pairs.extend((c.answer, q.gold) for c in by_question[q.id])
        pairs.append((majority[q.id][0], q.gold))
    verdicts = iter(batch_equivalent(pairs))
    correct, majority_correct = [], []
    for q in graded:
        row = []
        for c in by_question[q.id]:
            c.correct = bool(next(verdicts))
            row.append(c.correct)
        correct.append(row)
        majority_correct.append(bool(next(verdicts)))
    metrics = summarize(correct, majority_correct, k, extra_pass_ks=extra_pass_ks)
    scored = [c for rows in by_question.values() for c in rows]
    if scored:
        metrics["mean_response_tokens"] = sum(c.num_tokens for c in scored) / len(scored)
        metrics["no_answer_frac"] = sum(c.answer is None for c in scored) / len(scored)
        metrics["truncated_frac"] = sum(c.truncated for c in scored) / len(scored)
    return EvalResult(metrics=metrics, completions=completions, majority=majority)


def evaluate(
    engine: RolloutEngine,
    questions: list[Question],
    n: int,
    sampling: SamplingParams,
    *,
    progress: bool = True,
    desc: str = "eval",
    exact_vote: bool = False,
    extraction: str = "lenient",
) -> EvalResult:
    """Sample ``n`` completions per question and score them (avg@n, pass@n, maj@n)."""
    completions = generate_completions(engine, questions, n, sampling, progress=progress, desc=desc)
    return score_completions(questions, completions, k=n, exact_vote=exact_vote, extraction=extraction)
