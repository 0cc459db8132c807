"""The local-model backends with a real (tiny, random) transformers model built from a config.

A random model cannot follow the rewriting instruction, so every reply must be recorded as a failed
attempt and the row kept or dropped as asked — never accepted as a rewrite.
"""

from __future__ import annotations

import asyncio
import json

import pyarrow.parquet as pq
import pytest

from corewarding.cli import main
from corewarding.data import load_pairs
from corewarding.rephrase.backends import BatchingBackend, EngineRunner
from corewarding.rephrase.cli import sidecar
from corewarding.rollout.types import SamplingParams


def _args(inp, out, model, *extra: str) -> list[str]:
    return [
        "rephrase", str(inp), "--limit", "4", "--out", str(out), "--backend", "hf", "--model", str(model),
        "--device", "cpu", "--max-retries", "1", "--max-tokens", "12", "--batch-size", "8", "--no-progress",
        *extra,
    ]  # fmt: skip


def test_random_model_replies_are_failures_kept_or_dropped(tiny_model_dir, math20_path, tmp_path, capsys):
    out = tmp_path / "tiny.parquet"
    assert main(_args(math20_path, out, tiny_model_dir, "--on-failure", "drop")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corewarding rephrase: error: all 4 rows of this run fell back to the original")
    assert "; last failure: row " in err and "they are not marked done" in err and "\n" not in err
    assert not out.exists()
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["successes"] == 0 and summary["failures"] == 4 and summary["dropped"] == 4
    assert summary["attempts"] == 8 and summary["retries"] == 4 and summary["http_retries"] == 0
    assert set(summary["attempt_statuses"]) <= {"unparsable", "empty"}
    assert summary["tokens"]["prompt"] > 0 and 0 < summary["tokens"]["completion"] <= 8 * 12
    assert summary["tokens"]["requests_without_usage"] == 0

    log = [json.loads(x) for x in sidecar(out, ".log.jsonl").read_text().splitlines()]
    assert sorted((e["row"], e["attempt"]) for e in log) == [(r, a) for r in range(4) for a in range(2)]
    assert all(e["status"] in ("unparsable", "empty") and e["reason"] for e in log)
    assert all(isinstance(e["reply"], str) and isinstance(e["seed"], int) for e in log)
    assert len({e["seed"] for e in log}) == 8  # one requested seed per (row, attempt)
    assert len({e["sampler_seed"] for e in log}) == 2  # HF seeds a batch: attempt 0's and attempt 1's

    # keep/drop is decided when the output is assembled: the same state, its fallbacks accepted as done,
    # now yields the kept originals without generating anything
    assert main(_args(math20_path, out, tiny_model_dir, "--on-failure", "keep", "--keep-fallbacks")) == 0
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["resumed_rows"] == 4 and summary["rows_this_run"] == 0 and summary["kept_original"] == 4
    pairs = load_pairs(math20_path, out, limit=4)
    assert all(b.question == a.question for a, b in pairs)
    assert all(b.extra["extra_info"]["rephrase_status"] == "failed" for _, b in pairs)
    assert pq.read_table(out).num_rows == 4

    # without --keep-fallbacks a rerun tries the fallbacks again, continuing the attempts with new seeds
    assert main(_args(math20_path, out, tiny_model_dir, "--on-failure", "keep")) == 2
    assert "retrying 4 that fell back" in capsys.readouterr().err
    log = [json.loads(x) for x in sidecar(out, ".log.jsonl").read_text().splitlines()]
    assert sorted((e["row"], e["attempt"]) for e in log) == [(r, a) for r in range(4) for a in range(4)]
    assert len({e["seed"] for e in log}) == 16


def test_batching_backend_groups_concurrent_requests(tiny_model_dir):
    from corewarding.rollout.hf_engine import HFRolloutEngine

    engine = HFRolloutEngine.from_pretrained(str(tiny_model_dir), device="cpu", batch_size=16)
    calls: list[tuple[int, int, int | None]] = []
    generate = engine.generate

    def counting_generate(prompts, n, sampling):
        calls.append((len(prompts), n, sampling.seed))
        return generate(prompts, n, sampling)

    engine.generate = counting_generate
    backend = BatchingBackend(EngineRunner(engine, "tiny"), max_batch=16)
    messages = [[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}] for i in range(6)]

    async def go():
        greedy = SamplingParams(temperature=1.0, max_new_tokens=5)
        rephrase = [
            backend.complete(m, n=1, sampling=SamplingParams(**{**greedy.__dict__, "seed": 100 + i}))
            for i, m in enumerate(messages)
        ]
        check = [backend.complete(messages[0], n=3, sampling=SamplingParams(max_new_tokens=5, seed=7))]
        try:
            return await asyncio.gather(*rephrase, *check)
        finally:
            await backend.aclose()

    results = asyncio.run(go())
    assert sorted(calls) == [(1, 3, 7), (6, 1, 100)]  # one generate per sampling group, seeded by its first
    assert [len(r.texts) for r in results] == [1] * 6 + [3]
    assert all(r.seed == 100 for r in results[:6]) and results[6].seed == 7
    assert all(0 < r.completion_tokens <= 5 * len(r.texts) and r.prompt_tokens > 0 for r in results)


@pytest.mark.slow
def test_answer_check_with_a_local_model(scripted_server, tiny_model_dir, math20_path, tmp_path):
    """Rewrites from the HTTP server, the answer check by a local model: every pair is checked and logged."""
    out = tmp_path / "checked.parquet"
    args = [
        "rephrase", str(math20_path), "--limit", "3", "--out", str(out), "--api-base", scripted_server.url,
        "--model", "scripted", "--check-answers", str(tiny_model_dir), "--check-backend", "hf", "--check-k", "2",
        "--check-max-tokens", "8", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    check = summary["answer_check"]
    assert check["checked"] == 3 and check["agree"] + check["disagree"] + check["undetermined"] == 3
    assert check["tokens"]["completion"] > 0
    log = [json.loads(x) for x in sidecar(out, ".log.jsonl").read_text().splitlines()]
    checks = [e for e in log if e["kind"].startswith("check_")]
    assert sorted((e["row"], e["kind"]) for e in checks) == [
        (r, k) for r in range(3) for k in ("check_original", "check_rephrased")
    ]
    assert all(len(e["replies"]) == 2 and len(e["answers"]) == 2 for e in checks)
    infos = [row["answer_check"] for row in pq.read_table(out).column("extra_info").to_pylist()]
    assert all(set(i) == {"original_majority", "rephrased_majority", "agree"} for i in infos)
