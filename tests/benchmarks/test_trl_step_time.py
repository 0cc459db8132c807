"""``benchmarks/trl_step_time.py`` runs both trainers end to end and reports both sides (skipped without trl)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "trl_step_time.py"


@pytest.mark.slow
def test_benchmark_times_both_trainers(tmp_path):
    from corewarding.microworld.base_model import PretrainConfig, pretrain_base_model
    from corewarding.microworld.world import WorldConfig, build_world

    # a quick, weak base model for the default world (the one the benchmark writes), so its tokenizer fits
    tiny = replace(
        PretrainConfig(), hidden_size=64, num_layers=2, intermediate_size=128, steps=30, n_problems=300
    )
    base = pretrain_base_model(build_world(config=WorldConfig()), tmp_path / "base", tiny, progress=False)
    out_json = tmp_path / "result.json"
    command = [
        sys.executable,
        str(SCRIPT),
        *("--steps", "3", "--questions", "4", "--group-size", "4", "--max-new-tokens", "16"),
        *("--base-model", str(base), "--out", str(tmp_path / "runs"), "--json", str(out_json)),
        "--no-progress",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    result = json.loads(out_json.read_text())
    for side in ("corewarding", "trl"):
        r = result[side]
        assert len(r["step_seconds"]) == 3
        assert all(t > 0 for t in r["step_seconds"])
        assert r["median_step_seconds"] > 0
        assert r["mean_completion_length"] > 0
        assert all(0 < n <= 16 for n in r["completion_length"])
    assert result["ratio_step_seconds"] > 0
    assert result["same_questions"]  # both trainers saw the same questions at every step
    # TRL: one policy pass with gradient and one reference pass a step, no extra "old log-probs" pass
    assert result["trl"]["forward_passes_per_step"] == {"policy_with_grad": 1.0, "reference": 1.0}
    assert "ratio corewarding/TRL" in proc.stdout
    assert (tmp_path / "runs" / "corewarding" / "metrics.jsonl").is_file()
