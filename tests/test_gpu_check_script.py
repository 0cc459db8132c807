"""``scripts/gpu-check.sh`` end to end on a CPU and a tiny model: the launches, the FSDP2 config, the
consolidation of sharded checkpoints and the report all work, so a person with a GPU only adds the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_runs_and_reports_on_cpu(tmp_path):
    env = {
        **os.environ,
        "GPU_CHECK_ALLOW_CPU": "1",
        "GPU_CHECK_MODEL": "builtin:tiny-qwen3",
        "GPU_CHECK_TOKENS": "16",
        "OUT_DIR": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", "scripts/gpu-check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu-check: OK" in done.stdout
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert set(report) == {"co2-plain", "co2-fsdp2", "sc-fsdp2"}
    assert report["sc-fsdp2"]["weights_changed_frac"] >= 0.99
    for name in ("co2-plain", "co2-fsdp2"):
        r = report[name]
        assert r["weights_dtype"] == "torch.float32"
        assert len(r["teacher_ema_a"]) == 3 and r["teacher_ema_a"][0] > r["teacher_ema_a"][-1] > 0
        assert all(t > 0 for t in r["rollout_tokens_per_s"])
