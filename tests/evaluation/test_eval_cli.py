"""``corewarding eval`` and ``corewarding solve`` end to end with a tiny real model on the shared benchmarks."""

from __future__ import annotations

import json

import pytest

from corewarding.cli import main
from corewarding.data import load_questions
from corewarding.evaluation import cli as eval_cli
from corewarding.evaluation.benchmarks import REGISTRY
from corewarding.evaluation.solve import solve
from corewarding.rollout.types import SamplingParams

SMALL = ["--limit", "2", "--n", "2", "--max-new-tokens", "16", "--device", "cpu", "--quiet"]
ROW_KEYS = {
    "question_id",
    "sample_index",
    "completion",
    "answer",
    "gold",
    "correct",
    "num_tokens",
    "truncated",
}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_eval_every_shared_benchmark(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    names = list(REGISTRY)  # math500, gsm8k, amc, amc23, aime24, aime25
    rc = main(
        ["eval", "--model", str(tiny_model_dir), "--benchmarks", ",".join(names), "--out", str(out), *SMALL]
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == str(tiny_model_dir)
    assert results["settings"]["max_new_tokens"] == 16 and results["settings"]["n"] == 2
    assert results["samples"] == 2 * 2 * len(names)
    assert results["samples_per_s"] > 0 and results["seconds"] > 0
    assert list(results["benchmarks"]) == names
    table = capsys.readouterr().out
    for name in names:
        entry = results["benchmarks"][name]
        assert entry["questions"] == 2 and entry["n"] == 2
        assert entry["new_samples"] == 4 and entry["reused_samples"] == 0
        m = entry["metrics"]
        assert {"avg@2", "pass@2", "maj@2", "pass@1", "no_answer_frac", "truncated_frac"} <= set(m)
        assert all(0.0 <= m[k] <= 1.0 for k in ("avg@2", "pass@2", "maj@2", "pass@1"))
        assert m["pass@2"] >= m["avg@2"] and m["questions"] == 2
        questions = load_questions(entry["path"], limit=2)
        rows = _rows(out / "samples" / f"{name}.jsonl")
        assert [(r["question_id"], r["sample_index"]) for r in rows] == [
            (q.id, i) for q in questions for i in range(2)
        ]
        for r, q in zip(rows, [q for q in questions for _ in range(2)], strict=True):
            assert set(r) == ROW_KEYS
            assert r["gold"] == q.gold and isinstance(r["correct"], bool)
            assert 1 <= r["num_tokens"] <= 16
            assert r["num_tokens"] == 16 or not r["truncated"]  # truncated means it hit the limit
        assert name in table


class CountingEngine:
    """Wraps the real engine built by the CLI and records what it is asked to sample."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[int, int]] = []  # (prompts, n)

    def generate(self, prompts, n, sampling):
        self.calls.append((len(prompts), n))
        return self.inner.generate(prompts, n, sampling)

    def sync_weights(self, model):
        self.inner.sync_weights(model)


@pytest.fixture
def counting(monkeypatch):
    made: list[CountingEngine] = []
    real = eval_cli.build_engine

    def build(args):
        made.append(CountingEngine(real(args)))
        return made[-1]

    monkeypatch.setattr(eval_cli, "build_engine", build)
    return made


def test_resume_samples_only_what_is_missing(tiny_model_dir, tmp_path, counting, capsys):
    out = tmp_path / "eval"
    base = ["eval", "--model", str(tiny_model_dir), "--benchmarks", "aime24", "--out", str(out)]
    opts = ["--max-new-tokens", "8", "--device", "cpu", "--quiet", "--chunk-size", "2"]
    assert main([*base, "--limit", "3", "--n", "2", *opts]) == 0
    assert counting[-1].calls == [(2, 2), (1, 2)]  # chunks of two questions
    path = out / "samples" / "aime24.jsonl"
    rows = _rows(path)
    assert len(rows) == 6

    # a crash during the last chunk: its two rows are lost and a torn line is left behind
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][:30])
    assert main([*base, "--limit", "3", "--n", "2", *opts]) == 0
    assert counting[-1].calls == [(1, 2)]  # only the third question, both samples
    resumed = _rows(path)
    assert [(r["question_id"], r["sample_index"], r["completion"]) for r in resumed[:4]] == [
        (r["question_id"], r["sample_index"], r["completion"]) for r in rows[:4]
    ]
    assert len(resumed) == 6 and all(isinstance(r["correct"], bool) for r in resumed)
    entry = json.loads((out / "results.json").read_text())["benchmarks"]["aime24"]
    assert (entry["reused_samples"], entry["new_samples"]) == (4, 2)

    # more samples per question: only index 2 of each question is drawn, in one call
    assert main([*base, "--limit", "3", "--n", "3", *opts]) == 0
    assert counting[-1].calls == [(2, 1), (1, 1)]
    grown = _rows(path)
    assert sorted((r["question_id"], r["sample_index"]) for r in grown) == sorted(
        (q, i) for q in {r["question_id"] for r in rows} for i in range(3)
    )
    old = {(r["question_id"], r["sample_index"]): r["completion"] for r in resumed}
    assert all(
        old[(r["question_id"], r["sample_index"])] == r["completion"] for r in grown if r["sample_index"] < 2
    )

    # everything present: nothing is sampled; fewer questions keeps the other rows on disk
    assert main([*base, "--limit", "1", "--n", "3", *opts]) == 0
    assert counting[-1].calls == []
    assert len(_rows(path)) == 9
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["aime24"]["metrics"]["questions"] == 1
    assert results["samples"] == 0 and results["samples_per_s"] is None
    capsys.readouterr()

    # other sampling settings must not mix into these samples
    assert main([*base, "--limit", "1", "--n", "3", *opts, "--temperature", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "temperature: 0.8 there, 0.5 now" in err and "--overwrite" in err
    assert main([*base, "--limit", "1", "--n", "1", *opts, "--temperature", "0.5", "--overwrite"]) == 0
    assert counting[-1].calls == [(1, 1)]
    assert len(_rows(path)) == 1


def test_bad_options_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    base = ["eval", "--model", str(tiny_model_dir), "--out", str(tmp_path / "e"), "--device", "cpu"]
    assert main([*base, "--benchmarks", "nope"]) == 2
    assert "neither a known benchmark" in capsys.readouterr().err
    assert main([*base, "--benchmarks", "aime24", "--n-for", "aime24=two"]) == 2
    assert "--n-for aime24=two: expected an integer" in capsys.readouterr().err
    assert main([*base, "--benchmarks", "aime24", "--n", "0"]) == 2
    assert main([*base, "--benchmarks", "aime24", "--top-p", "0"]) == 2


def test_vllm_engine_without_vllm_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed")
    rc = main(["solve", "--model", str(tiny_model_dir), "What is 1+1?", "--engine", "vllm"])
    assert rc == 2
    assert "needs the 'vllm' package" in capsys.readouterr().err


def test_solve_votes_over_scripted_samples(scripted_engine_class):
    engine = scripted_engine_class(
        {"What is 1/2?": ["\\boxed{0.5}", "\\boxed{\\frac12}", "\\boxed{3}", "no idea"]}
    )
    report = solve(engine, "What is 1/2?", 4, SamplingParams(), gold="1/2")
    assert report["answer"] == "0.5" and report["votes"] == 2 and report["majority_correct"] is True
    assert [s["answer"] for s in report["samples"]] == ["0.5", "\\frac12", "3", None]
    assert [s["correct"] for s in report["samples"]] == [True, True, False, False]
    assert engine.calls[0][1] == 4


def test_solve_command_with_a_real_model(tiny_model_dir, capsys):
    args = ["solve", "--model", str(tiny_model_dir), "What is $2+3$?", "--n", "3", "--max-new-tokens", "8"]
    assert main([*args, "--device", "cpu", "--json", "--show"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and len(report["samples"]) == 3
    assert all(s["num_tokens"] <= 8 and isinstance(s["completion"], str) for s in report["samples"])
    answers = [s["answer"] for s in report["samples"]]
    assert report["votes"] <= sum(a is not None for a in answers)
    assert (report["answer"] is None) == (report["votes"] == 0)

    assert main([*args, "--device", "cpu", "--gold", "5"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in text[:3]] == ["sample 0", "sample 1", "sample 2"]
    assert text[-1].startswith("answer: ") and "/3 samples agree" in text[-1]
