#!/usr/bin/env bash
# The real GPU training path in about 11 minutes on one H100: fp32 master weights with bf16 compute at the
# paper's lr 3e-6, Co-rewarding-II (EMA teacher sampled through the rollout engine, teacher = KL reference),
# once as a plain single process and once under the shipped FSDP2 accelerate config (one process).
#
#   bash scripts/gpu-check.sh            # OUT_DIR=runs/gpu-check, PYTHON=python
# (GPU_CHECK_MODEL, GPU_CHECK_TOKENS and GPU_CHECK_ALLOW_CPU=1 let CI run the same script on a tiny model;
# GPU_CHECK_RUNS="sc-fsdp2" runs only the named runs of the three, e.g. to finish a check cut short.)
#
# Model: builtin:random-qwen3-0.6b (Qwen3-0.6B's shape, random weights: nothing is downloaded; its tokenizer
# is trained on the reference data, so COREWARDING_DATA_DIR or ../shared/data must be there). 8 questions x
# G = 8, 512 new tokens, 3 steps. On random weights label-free voting finds no answers, so Co-rewarding-II's
# reward is 0 and its update is empty by design; a third run, self-certainty (a reward that is never
# constant) under FSDP2, is the one whose weights must move. It prints, per run: the fraction of weights
# changed, the teacher's EMA rate, peak GPU memory and rollout tokens/s, writes $OUT_DIR/gpu-check.json,
# and exits non-zero if the self-certainty run moved fewer than 99% of the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT_DIR:-runs/gpu-check}
MODEL=${GPU_CHECK_MODEL:-builtin:random-qwen3-0.6b}
TOKENS=${GPU_CHECK_TOKENS:-512}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# the package from this checkout, whether or not it is installed
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'PYEOF'
import os, sys
import accelerate, torch, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB")
elif os.environ.get("GPU_CHECK_ALLOW_CPU") == "1":
    print("device: CPU (GPU_CHECK_ALLOW_CPU=1: checking the script itself, not a GPU)")
else:
    sys.exit("gpu-check: no CUDA device visible")
PYEOF

rm -rf "$OUT"
common=(configs/gpu-smoke.yaml "model.name_or_path=$MODEL" model.dtype=float32 model.compute_dtype=auto optim.lr=3e-6
        trainer.batch_questions=8 rollout.n=8 teacher.n=8 "rollout.max_new_tokens=$TOKENS" trainer.total_steps=3
        trainer.save_every=3 trainer.val_every=0 validation.before_training=false "trainer.output_dir=$OUT"
        "trainer.loggers=[jsonl]")
launch=("$PY" -m accelerate.commands.launch --config_file configs/accelerate/fsdp2.yaml --num_processes 1
        --main_process_port 29533)

RUNS=${GPU_CHECK_RUNS:-co2-plain co2-fsdp2 sc-fsdp2}
wanted() { [[ " $RUNS " == *" $1 "* ]]; }

if wanted co2-plain; then
    "$PY" -m corewarding train "${common[@]}" method=co_rewarding_ii trainer.run_name=co2-plain --no-progress
fi
if wanted co2-fsdp2; then
    "${launch[@]}" -m corewarding train "${common[@]}" method=co_rewarding_ii trainer.run_name=co2-fsdp2 --no-progress
fi
if wanted sc-fsdp2; then
    "${launch[@]}" -m corewarding train "${common[@]}" method=self_certainty trainer.run_name=sc-fsdp2 \
        trainer.total_steps=2 trainer.save_every=2 "rollout.max_new_tokens=$((TOKENS / 2))" --no-progress
fi

OUT="$OUT" MODEL="$MODEL" "$PY" - <<'PYEOF'
import json, os, sys
from pathlib import Path

import torch

from corewarding.models.builtin import resolve_model_path
from corewarding.training.checkpoint import latest_checkpoint, load_tensors

out = Path(os.environ["OUT"])
base = {}
for f in Path(resolve_model_path(os.environ["MODEL"])).glob("*.safetensors"):
    base.update(load_tensors(f))


def final_fp32(run: Path) -> dict:
    step, ckpt = latest_checkpoint(run)
    state = ckpt / "state"
    if (state / "sharded").is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(str(state / "sharded"), str(out / f"{run.name}.pt"))
        return torch.load(out / f"{run.name}.pt", weights_only=True)["model"]
    return load_tensors(state / "model.safetensors")


report = {}
for run in sorted(p for p in out.iterdir() if p.is_dir()):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    final = final_fp32(run)
    changed = sum(int((final[k].float() != base[k].float()).sum()) for k in base)
    total = sum(v.numel() for v in base.values())
    report[run.name] = {
        "weights_changed_frac": changed / total,
        "weights_dtype": str(next(iter(final.values())).dtype),
        "teacher_ema_a": [r.get("teacher/ema_a") for r in steps],
        "peak_gpu_gib": max(r.get("memory/peak_allocated_gb", 0.0) for r in steps),
        "rollout_tokens_per_s": [round(r["throughput/rollout_tokens_per_s"]) for r in steps],
        "seconds_per_step": [round(r["time/generation"] + r["time/scoring"] + r["time/update"], 1) for r in steps],
        "reward_mean": [r["reward/mean"] for r in steps],
    }
(out / "gpu-check.json").write_text(json.dumps(report, indent=2))
for name, r in report.items():
    print(f"{name:10s} weights changed {r['weights_changed_frac']:.4f} ({r['weights_dtype']}), "
          f"EMA a {r['teacher_ema_a']}, peak {r['peak_gpu_gib']:.1f} GiB, rollout tok/s {r['rollout_tokens_per_s']}, "
          f"s/step {r['seconds_per_step']}, reward {r['reward_mean']}")
if "sc-fsdp2" not in report:
    sys.exit("gpu-check: the self-certainty run (sc-fsdp2), whose weights must move, was not among GPU_CHECK_RUNS")
moved = report["sc-fsdp2"]["weights_changed_frac"]
if moved < 0.99:
    sys.exit(f"gpu-check: FAILED, the self-certainty run changed only {moved:.2%} of the weights")
print("gpu-check: OK")
PYEOF
