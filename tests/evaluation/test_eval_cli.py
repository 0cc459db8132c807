"""``corewarding eval`` and ``corewarding solve`` end to end with a tiny real model on the shared benchmarks."""

from __future__ import annotations

import json
import logging

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
    assert "--n-for aime24=two: expected a positive integer" in capsys.readouterr().err
    assert main([*base, "--benchmarks", "aime24", "--n-for", "aime24=0"]) == 2
    assert "--n-for aime24=0: expected a positive integer" in capsys.readouterr().err


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


# ---------------------------------------------------------------- hostile input, before any model loads


def _argparse_error(argv: list[str], capsys) -> str:
    """Run ``argv``, which must fail in argparse: exit 2, no traceback; return the error line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--chunk-size", "0", "a positive integer"),
        ("--n", "0", "a positive integer"),
        ("--limit", "-1", "a positive integer"),
        ("--batch-size", "0", "a positive integer"),
        ("--max-new-tokens", "0", "a positive integer"),
        ("--top-k", "-1", "an integer ≥ 0"),
        ("--seed", "-1", "a seed"),
        ("--seed", "1.5", "a seed"),
        ("--temperature", "-0.1", "a temperature ≥ 0"),
        ("--temperature", "nan", "a temperature ≥ 0"),
        ("--top-p", "0", "a fraction in (0, 1]"),
        ("--top-p", "1.5", "a fraction in (0, 1]"),
        ("--gpu-memory-utilization", "inf", "a fraction in (0, 1]"),
    ],
)
def test_eval_numeric_options_are_argparse_errors(option, value, expected, tmp_path, capsys):
    argv = ["eval", "--model", "m", "--benchmarks", "aime24", "--out", str(tmp_path / "e")]
    line = _argparse_error([*argv, f"{option}={value}"], capsys)
    assert line.startswith("corewarding eval: error: argument") and option in line and expected in line
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(("option", "value"), [("--n", "0"), ("--temperature", "-1"), ("--top-p", "nan")])
def test_solve_numeric_options_are_argparse_errors(option, value, capsys):
    line = _argparse_error(["solve", "--model", "m", "q", f"{option}={value}"], capsys)
    assert line.startswith("corewarding solve: error: argument") and option in line


def test_numeric_options_accept_their_edges():
    """0 is greedy, top-p 1 is no nucleus cut, top-k 0 is no top-k: all valid."""
    from corewarding.cli import build_parser

    args = build_parser().parse_args(
        ["eval", "--model", "m", "--temperature", "0", "--top-p", "1", "--top-k", "0", "--seed", "4294967295"]
    )
    assert (args.temperature, args.top_p, args.top_k, args.seed) == (0.0, 1.0, 0, 2**32 - 1)
    params = eval_cli.sampling_from_args(args)
    assert (params.temperature, params.top_p, params.seed) == (0.0, 1.0, 2**32 - 1)


class ConstantEngine:
    """Answers every prompt with ``\\boxed{1}``; counts the prompts it was asked about."""

    def __init__(self):
        self.prompts = 0

    def generate(self, prompts, n, sampling):
        from corewarding.rollout.types import Rollout

        self.prompts += len(prompts)
        return [
            Rollout(prompt_ids=[1], response_ids=[2, 3], text="\\boxed{1}", prompt_index=i)
            for i in range(len(prompts))
            for _ in range(n)
        ]

    def sync_weights(self, model):
        pass


@pytest.fixture
def fake_engine(monkeypatch):
    """Replaces model loading: ``built`` lists each engine made, so a test can prove none was."""
    built: list[ConstantEngine] = []

    def build(args):
        built.append(ConstantEngine())
        return built[-1]

    monkeypatch.setattr(eval_cli, "build_engine", build)
    return built


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(
        "".join(json.dumps({"problem": f"What is {i}-{i - 1}?", "answer": "1"}) + "\n" for i in (1, 2))
    )
    return path


def _eval(bench, out, *extra: str) -> list[str]:
    return [
        "eval",
        "--model",
        "m",
        "--benchmarks",
        str(bench),
        "--out",
        str(out),
        "--n",
        "2",
        "--quiet",
        *extra,
    ]


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_fake_engine_run_writes_results(bench, tmp_path, fake_engine):
    out = tmp_path / "e"
    assert main(_eval(bench, out)) == 0
    entry = json.loads((out / "results.json").read_text())["benchmarks"]["bench"]
    assert entry["metrics"]["avg@2"] == 1.0 and entry["new_samples"] == 4
    assert fake_engine[0].prompts == 2


def test_out_that_is_a_regular_file_fails_before_the_model_loads(bench, tmp_path, fake_engine, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    err = _one_line_error(_eval(bench, out), capsys)
    assert "--out" in err and str(out) in err and "is a regular file" in err
    err = _one_line_error(_eval(bench, out / "below"), capsys)
    assert "regular file" in err
    assert out.read_text() == "not a folder" and fake_engine == []


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda out: (out / "samples").write_text("x"), "samples folder"),
        (lambda out: (out / "results.json").mkdir(), "results.json"),
        (lambda out: (out / "settings.json").mkdir(), "settings.json"),
        (lambda out: (out / "samples").mkdir() or (out / "samples" / "bench.jsonl").mkdir(), "'bench'"),
    ],
)
def test_outputs_in_the_way_fail_before_the_model_loads(bench, tmp_path, fake_engine, capsys, make, expected):
    out = tmp_path / "e"
    out.mkdir()
    make(out)
    err = _one_line_error(_eval(bench, out), capsys)
    assert expected in err and ("regular file" in err or "is a folder" in err)
    assert fake_engine == []


def test_samples_that_are_not_utf8_name_file_and_line(bench, tmp_path, fake_engine, capsys):
    out = tmp_path / "e"
    assert main(_eval(bench, out)) == 0
    capsys.readouterr()
    samples = out / "samples" / "bench.jsonl"
    lines = samples.read_bytes().splitlines(keepends=True)
    samples.write_bytes(lines[0] + lines[1].replace(b"boxed", b"box\xffed") + b"".join(lines[2:]))
    err = _one_line_error(_eval(bench, out), capsys)
    assert f"{samples}: line 2:" in err and "UTF-8" in err
    assert len(fake_engine) == 1  # only the first run loaded a model


def test_damaged_settings_stop_the_run_unless_overwrite(bench, tmp_path, fake_engine, capsys):
    out = tmp_path / "e"
    assert main(_eval(bench, out)) == 0
    capsys.readouterr()
    settings = out / "settings.json"
    for damage in (b'{"sampling": {"temperature": 0.8\xff}}', b"{not json", b"[]", b'{"sampling": 3}'):
        settings.write_bytes(damage)
        err = _one_line_error(_eval(bench, out), capsys)
        assert str(settings) in err and "--overwrite" in err
    assert len(fake_engine) == 1
    assert main(_eval(bench, out, "--overwrite")) == 0
    assert json.loads(settings.read_text())["sampling"]["temperature"] == 0.8
    assert fake_engine[-1].prompts == 2  # --overwrite discarded the samples and drew them again


def test_damaged_results_are_rebuilt_with_a_warning(bench, tmp_path, fake_engine, caplog):
    out = tmp_path / "e"
    assert main(_eval(bench, out)) == 0
    results = out / "results.json"
    results.write_bytes(b'{"benchmarks": {"bench": \xff')
    with caplog.at_level(logging.WARNING):
        assert main(_eval(bench, out)) == 0
    assert str(results) in caplog.text and "rebuilding" in caplog.text
    entry = json.loads(results.read_text())["benchmarks"]["bench"]
    assert (entry["reused_samples"], entry["new_samples"]) == (4, 0)


def test_overwrite_with_new_settings_sets_aside_other_benchmarks_samples(
    bench, tmp_path, fake_engine, caplog
):
    """Samples of a benchmark not named in an ``--overwrite`` run were drawn under the old settings: they must
    not be reused under the new ones, and must not be deleted either."""
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"problem": "What is 0+1?", "answer": "1"}) + "\n")
    out = tmp_path / "e"
    assert main(_eval(bench, out, "--benchmarks", f"{bench},{other}")) == 0
    old_other = (out / "samples" / "other.jsonl").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert main(_eval(bench, out, "--temperature", "0.5", "--overwrite")) == 0
    assert not (out / "samples" / "other.jsonl").exists()
    [kept] = list((out / "superseded").glob("*/samples/other.jsonl"))
    assert kept.read_bytes() == old_other
    assert json.loads((kept.parent.parent / "settings.json").read_text())["sampling"]["temperature"] == 0.8
    assert "other" in caplog.text and "superseded" in caplog.text
    before = fake_engine[-1].prompts
    assert main(_eval(bench, out, "--benchmarks", str(other), "--temperature", "0.5")) == 0
    assert fake_engine[-1].prompts == 1 and before == 2  # drawn afresh under the new settings
