#!/usr/bin/env python3
"""Mutation testing of the core logic (``make mutants``): run mutmut, then write ``mutants/report.md`` and
``mutants/report.json``.

    python scripts/mutants.py [--max-children N] [--fresh] [--report-only] [MUTANT_GLOB ...]

What is mutated and which tests judge it are ``[tool.mutmut]`` in ``pyproject.toml``: the GRPO loss and
advantages, the EMA teacher, the trainer's step, the reward methods, answer voting and the evaluation
metrics, against the fast unit tests that cover them (no slow or end-to-end test). ``MUTANT_GLOB`` limits
the run to some mutants, as ``mutmut run`` takes them (``"corewarding.rewards.*"``); the report then
counts what has been checked so far. mutmut keeps its results in ``mutants/`` and a rerun tests only
what changed; ``--fresh`` starts over.

The report: the score (killed / checked mutants, with timeouts counted apart), the same per module, and
every mutant that was not killed with its diff (survivors, and mutants no selected test reaches). It is
not part of ``make test`` or CI: a fresh run takes about 16 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
NOT_KILLED = ("survived", "no tests")  # listed with their diffs in the report


def run_mutmut(max_children: int, globs: list[str]) -> int:
    env = dict(os.environ)
    # mutmut runs the tests on its copy of src/ under mutants/, from which the package's default data folder
    # (<project>/../shared/data) would be mutants/../shared/data: point at the real one
    from_src = subprocess.run(
        [
            sys.executable,
            "-c",
            "from corewarding.data.paths import shared_data_dir; print(shared_data_dir())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    env.setdefault("COREWARDING_DATA_DIR", from_src)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # one thread per test process: max_children of them share the machine's cores
    env.setdefault("OMP_NUM_THREADS", "1")
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut), "run", "--max-children", str(max_children), *globs]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def collect() -> dict:
    """Every mutant's status from mutmut's ``.meta`` files, with the diff of each one not killed."""
    os.chdir(ROOT)  # mutmut's helpers read pyproject.toml and mutants/ relative to the working directory
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    modules: dict[str, Counter] = {}
    not_killed: list[dict] = []
    timeouts: list[str] = []
    for meta in sorted((MUTANTS / "src").rglob("*.py.meta")):
        path = meta.relative_to(MUTANTS).as_posix()[: -len(".meta")]
        data = json.loads(meta.read_text())
        counts = modules.setdefault(path, Counter())
        for name, exit_code in sorted(data["exit_code_by_key"].items(), key=lambda kv: _natural(kv[0])):
            status = status_by_exit_code[exit_code]
            counts[status] += 1
            if status == "timeout":
                timeouts.append(name)
            if status in NOT_KILLED:
                try:
                    diff = get_diff_for_mutant(name, path=path)
                except Exception as err:  # a report without one diff beats no report
                    diff = f"(no diff: {err})"
                not_killed.append(
                    {
                        "module": path,
                        "mutant": name,
                        "function": _function(name),
                        "status": status,
                        "diff": diff,
                    }
                )
    return {
        "modules": {path: _summary(c) for path, c in modules.items()},
        "not_killed": not_killed,
        "timeouts": timeouts,
    }


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def _function(name: str) -> str:
    """``corewarding.rewards.base.xǁRewardMethodǁscore__mutmut_3`` -> ``RewardMethod.score``."""
    key = name.rpartition(".")[2].rpartition("__mutmut_")[0]
    if key.startswith("x_"):
        return key[2:]
    return ".".join(part for part in key.split("ǁ")[1:] if part)


def _summary(counts: Counter) -> dict:
    total = sum(counts.values())
    checked = total - counts["not checked"]
    return {
        "total": total,
        "checked": checked,
        "killed": counts["killed"],
        "timeout": counts["timeout"],
        "survived": counts["survived"],
        "no_tests": counts["no tests"],
        "other": checked - counts["killed"] - counts["timeout"] - counts["survived"] - counts["no tests"],
        "not_checked": counts["not checked"],
        "score": counts["killed"] / checked if checked else None,
        "statuses": dict(sorted(counts.items())),
    }


def write_report(results: dict, seconds: float | None, globs: list[str]) -> None:
    totals: Counter = Counter()
    for m in results["modules"].values():
        totals.update(m["statuses"])
    overall = _summary(totals)
    report = {
        "score": overall["score"],
        "overall": overall,
        "modules": results["modules"],
        "not_killed": results["not_killed"],
        "timeouts": results["timeouts"],
        "mutant_globs": globs,
        "run_seconds": seconds,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (MUTANTS / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}%"

    lines = [
        "# Mutation testing",
        "",
        f"Score: **{pct(overall['score'])}** ({overall['killed']} killed of {overall['checked']} mutants "
        f"checked; {overall['timeout']} timed out, {overall['survived']} survived, {overall['no_tests']} "
        f"reached by no selected test, {overall['not_checked']} not checked).",
        "",
        "Score = killed / checked. A timeout (the mutant made the tests run away) is counted apart; it "
        "usually means a loop bound was mutated.",
        "",
        "| module | mutants | killed | timeout | survived | no tests | not checked | score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path, m in results["modules"].items():
        if m["total"]:
            lines.append(
                f"| {path} | {m['total']} | {m['killed']} | {m['timeout']} | {m['survived']} | "
                f"{m['no_tests']} | {m['not_checked']} | {pct(m['score'])} |"
            )
    if results["timeouts"]:
        lines += ["", "Timed out: " + ", ".join(f"`{name}`" for name in results["timeouts"]) + "."]
    lines += ["", "## Mutants not killed", ""]
    if not results["not_killed"]:
        lines.append("None.")
    current = None
    for entry in results["not_killed"]:
        if entry["module"] != current:
            current = entry["module"]
            lines += [f"### {current}", ""]
        lines += [f"`{entry['mutant']}` ({entry['status']})", "", "```diff", entry["diff"], "```", ""]
    (MUTANTS / "report.md").write_text("\n".join(lines) + "\n")
    print(
        f"\nmutation score {pct(overall['score'])}: {overall['killed']}/{overall['checked']} killed, "
        f"{len(results['not_killed'])} not killed; wrote {MUTANTS / 'report.md'} and report.json"
    )
    for path, m in results["modules"].items():
        if m["checked"]:
            print(f"  {path}: {pct(m['score'])} ({m['killed']}/{m['checked']})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results (delete mutants/)")
    parser.add_argument("--report-only", action="store_true", help="write the report from earlier results")
    parser.add_argument("globs", nargs="*", metavar="MUTANT_GLOB", help="only these mutants (mutmut run's)")
    args = parser.parse_args()
    if args.max_children < 1:
        parser.error("--max-children must be at least 1")
    seconds = None
    if not args.report_only:
        if args.fresh and MUTANTS.exists():
            shutil.rmtree(MUTANTS)
        start = time.monotonic()
        code = run_mutmut(args.max_children, args.globs)
        seconds = round(time.monotonic() - start, 1)
        if code != 0:
            print(f"mutmut run exited with {code}", file=sys.stderr)
            return code
    if not MUTANTS.is_dir():
        print("no mutants/ folder: run without --report-only first", file=sys.stderr)
        return 2
    write_report(collect(), seconds, args.globs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
