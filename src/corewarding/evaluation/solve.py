"""Answer one question with k samples and a vote: the voted answer and how many samples agree.

``corewarding solve --model PATH "What is 3+4?" [--n 8] [--temperature 0.8] [--show]`` uses the training
prompt (system prompt + question) and the same extraction and equivalence-aware voting as the
self-rewards, so it shows what the majority-vote pseudo-label of a question would be.
"""

from __future__ import annotations

import argparse
import json
import sys

from corewarding.arguments import POSITIVE_INT
from corewarding.errors import ConfigError
from corewarding.evaluation.cli import add_model_arguments, build_engine, sampling_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the question text (use '-' to read it from stdin)")
    parser.add_argument("--n", type=POSITIVE_INT, default=8, help="samples (default 8)")
    parser.add_argument("--gold", default=None, help="reference answer: also report which samples are right")
    parser.add_argument("--show", action="store_true", help="print every completion")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_model_arguments(parser)


def solve(engine, question: str, n: int, sampling, gold: str | None = None) -> dict:
    """Sample ``n`` answers to ``question`` and vote: returns the answer, its votes and every sample."""
    from corewarding.data.question import Question
    from corewarding.evaluation.evaluate import generate_completions, score_completions

    q = Question.from_text("question", question, gold=gold, source="solve")
    completions = generate_completions(engine, [q], n, sampling, progress=False)
    result = score_completions([q], completions, k=n)
    answer, votes = result.majority[q.id]
    return {
        "question": question,
        "answer": answer,
        "votes": votes,
        "n": n,
        "gold": gold,
        "majority_correct": result.metrics.get(f"maj@{n}") == 1.0 if gold is not None else None,
        "samples": [
            {
                "sample_index": c.sample_index,
                "answer": c.answer,
                "correct": c.correct,
                "num_tokens": c.num_tokens,
                "truncated": c.truncated,
                "completion": c.completion,
            }
            for c in sorted(completions, key=lambda c: c.sample_index)
        ],
    }


def run(args: argparse.Namespace) -> int:
    question = sys.stdin.read() if args.question == "-" else args.question
    if not question.strip():
        raise ConfigError("solve: the question is empty")
    sampling = sampling_from_args(args)
    engine = build_engine(args)
    report = solve(engine, question.strip(), args.n, sampling, gold=args.gold)
    if args.json:
        if not args.show:
            for s in report["samples"]:
                s.pop("completion")
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    for s in report["samples"]:
        mark = "" if s["correct"] is None else ("  ✓" if s["correct"] else "  ✗")
        cut = "  (truncated)" if s["truncated"] else ""
        print(
            f"sample {s['sample_index']}: {s['answer'] if s['answer'] is not None else '(no answer)'}{mark}{cut}"
        )
        if args.show:
            print("  " + s["completion"].replace("\n", "\n  "))
    shown = report["answer"] if report["answer"] is not None else "(no answer)"
    line = f"answer: {shown}  ({report['votes']}/{report['n']} samples agree)"
    if report["majority_correct"] is not None:
        line += "  correct" if report["majority_correct"] else f"  wrong (gold: {report['gold']})"
    print(line)
    return 0
