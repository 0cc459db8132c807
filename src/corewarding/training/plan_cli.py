"""``corewarding plan CONFIG [key=value ...]``: per-GPU memory plan of a training config, and whether it fits.

Reads the model's real shape from its ``config.json`` (or ``--model-config``), then prints weights,
gradients, optimizer state, teacher/reference, activations, logits and the rollout KV cache (or vLLM's
share) per GPU, and ends with one line per GPU count: fits or not. Without ``--gpus`` it plans for 4 and 8
GPUs; the formulas and assumptions are in ``corewarding.training.memory_plan``.
"""

from __future__ import annotations

import argparse
import dataclasses

from corewarding.arguments import FRACTION_BELOW_ONE, POSITIVE_FLOAT, POSITIVE_INT

VERDICT_GPUS = (4, 8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. micro_batch_size=2")
    parser.add_argument(
        "--gpus",
        type=POSITIVE_INT,
        default=None,
        help="plan for N GPUs (default: 4 and 8); 4 and 8 are always judged",
    )
    parser.add_argument(
        "--strategy",
        choices=("none", "ddp", "fsdp2", "deepspeed"),
        default=None,
        help="override distributed.strategy (auto = fsdp2 on several GPUs, none on one)",
    )
    parser.add_argument(
        "--model-config", default=None, metavar="PATH", help="a config.json or model directory to plan for"
    )
    parser.add_argument(
        "--gpu-memory-gb", type=POSITIVE_FLOAT, default=80.0, help="memory of one GPU (default 80)"
    )
    parser.add_argument(
        "--margin",
        type=FRACTION_BELOW_ONE,
        default=0.1,
        help="fraction of GPU memory kept free (default 0.1)",
    )
    parser.add_argument(
        "--eager-attention",
        action="store_true",
        help="count the s×s attention scores (eager attention) instead of SDPA/flash",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the whole plan as JSON")


def run(args: argparse.Namespace) -> int:
    from corewarding.config import load_config
    from corewarding.files import atomic_write_json
    from corewarding.training import memory_plan as mp

    cfg = load_config(args.config, args.overrides)  # the options' numbers were checked by their types
    loaded = mp.load_model_shape(cfg.model.name_or_path, args.model_config)
    shape = loaded.shape

    counts = [args.gpus] if args.gpus is not None else []
    counts += [n for n in VERDICT_GPUS if n not in counts]
    plans = [
        mp.build_plan(
            shape,
            mp.settings_from_config(
                cfg,
                n,
                strategy=args.strategy,
                gpu_memory_gib=args.gpu_memory_gb,
                margin=args.margin,
                flash_attention=not args.eager_attention,
            ),
        )
        for n in counts
    ]
    s = plans[0].settings
    b = mp.parameter_breakdown(shape)
    lm_head = "lm_head tied" if shape.tie_word_embeddings else f"lm_head {b['lm_head']:,}"
    rollout = (
        f"rollout: hf engine, up to rollout.batch_size={s.rollout_batch_size} sequences per generate call"
        if s.rollout_engine == "hf"
        else f"rollout: vllm, gpu_memory_utilization={s.gpu_memory_utilization:g}, "
        f"{'released' if s.vllm_sleeps else 'kept'} while training"
    )
    header = [
        f"memory plan: {cfg.model.name_or_path} (shape from {loaded.source})",
        f"  {shape.describe()}",
        f"  parameters: {b['total']:,} (embeddings {b['embed_tokens']:,}, {lm_head}, "
        f"{shape.num_layers} layers × {b['per_layer']:,}, final norm {b['final_norm']:,})",
        f"  method {s.method}; weights {s.storage_dtype}, compute {s.compute_dtype}; micro-batch "
        f"{s.micro_batch_size} × ({s.prompt_length} + {s.response_length}) tokens; gradient checkpointing "
        f"{'on' if s.gradient_checkpointing else 'off'}; {'SDPA/flash' if s.flash_attention else 'eager'} attention",
        f"  {rollout}",
        *(
            [
                f"  LoRA: r={s.lora_rank} on {', '.join(s.lora_targets)}: "
                f"{mp.lora_parameter_count(shape, s.lora_rank, s.lora_targets):,} adapter parameters; frozen base "
                f"in {s.compute_dtype}, no reference or teacher copy"
            ]
            if s.lora
            else []
        ),
        f"  GPU {s.gpu_memory_gib:g} GiB, {s.margin:.0%} kept free; activations are an estimate (what HF's "
        "decoder layer saves for backward); formulas in corewarding/training/memory_plan.py",
    ]
    print(mp.format_table(plans, header))
    verdicts = [mp.verdict(p) for p in plans]
    print()
    for line in verdicts:
        print(line)
    if args.json:
        atomic_write_json(
            args.json,
            {
                "config": str(args.config),
                "overrides": list(args.overrides),
                "model": {
                    "name_or_path": cfg.model.name_or_path,
                    "config_source": loaded.source,
                    "shape": dataclasses.asdict(shape),
                    "parameters": b,
                },
                "plans": [p.to_dict() for p in plans],
                "verdicts": verdicts,
            },
        )
    return 0
