"""The benchmark registry: short names for the paper's evaluation sets, and custom files by path.

``corewarding eval --benchmarks math500,amc`` must find the reference files without the user typing
paths, yet a user with their own copy (or their own test set) must be able to point anywhere. So a name
resolves, in order, to: an explicit ``--benchmark-file name=path``; the file under ``--data-dir``; the
file under the shared data folder (:func:`corewarding.data.paths.shared_data_dir`). Anything that is not
a registered name but names an existing ``.jsonl``/``.json``/``.parquet`` file is a custom benchmark
called by its file stem; the loaders accept verl parquet and JSONL alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corewarding.data.paths import shared_data_dir
from corewarding.errors import ConfigError

DEFAULT_BENCHMARKS = ("math500", "gsm8k", "amc", "aime24", "aime25")
CUSTOM_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: its file name in the shared ``benchmarks/`` folder and what it is.

    ``description`` names the metric the Co-rewarding paper reports for it (pass@1, avg@8, ...); it is
    recorded in results.json so a reader knows which number to compare. It does not change sampling:
    ``--n`` applies to every benchmark unless ``--n-for name=k`` overrides it.
    """

    name: str
    filename: str
    description: str


REGISTRY: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("math500", "math500.jsonl", "MATH-500 (Lightman et al.), paper: pass@1"),
        BenchmarkSpec("gsm8k", "gsm8k_test.jsonl", "GSM8K test set, paper: pass@1"),
        BenchmarkSpec("amc", "amc_ttt.parquet", "the paper's AMC set (83 questions), paper: avg@8"),
        BenchmarkSpec("amc23", "amc23.jsonl", "AMC 2023 (40 questions)"),
        BenchmarkSpec("aime24", "aime24.jsonl", "AIME 2024 (30 questions), paper: avg@k"),
        BenchmarkSpec("aime25", "aime25.jsonl", "AIME 2025 (30 questions), paper: avg@k"),
    )
}


@dataclass(frozen=True)
class Benchmark:
    """A benchmark resolved to a file: ``name`` labels results and sample files; ``n`` samples per question."""

    name: str
    path: Path
    n: int
    registered: bool


def default_benchmark_dir(data_dir: str | Path | None = None) -> Path:
    """Where registered benchmark files live: ``data_dir`` (or its ``benchmarks/`` subfolder if it has one),
    else ``<shared data>/benchmarks``."""
    if data_dir is None:
        return shared_data_dir() / "benchmarks"
    base = Path(data_dir).expanduser()
    return base / "benchmarks" if (base / "benchmarks").is_dir() else base


def parse_assignments(items: list[str] | None, option: str) -> dict[str, str]:
    """Parse repeated ``name=value`` options (also comma-separated) into a dict, with a clear error."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise ConfigError(f"{option}: expected NAME=VALUE, got {part!r}")
            out[name.strip()] = value.strip()
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text) or "benchmark"


def resolve_benchmarks(
    names: str | list[str],
    n: int,
    *,
    data_dir: str | Path | None = None,
    files: Mapping[str, str | Path] | None = None,
    n_for: Mapping[str, int] | None = None,
) -> list[Benchmark]:
    """Turn ``--benchmarks`` (comma-separated names and/or paths) into existing files.

    Raises :class:`ConfigError` for an unknown name, a missing file (naming where it looked), a
    duplicated result name, or an ``--n-for``/``--benchmark-file`` entry that matches no chosen benchmark.
    """
    items = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
    if not items:
        raise ConfigError("--benchmarks: no benchmark given")
    files = dict(files or {})
    n_for = dict(n_for or {})
    folder = default_benchmark_dir(data_dir)
    out: list[Benchmark] = []
    for item in items:
        if item in files or item in REGISTRY:
            name, registered = item, item in REGISTRY
            path = Path(files[item]).expanduser() if item in files else folder / REGISTRY[item].filename
            if not path.is_file():
                hint = (
                    ""
                    if item in files
                    else " (set --data-dir, --benchmark-file NAME=PATH or COREWARDING_DATA_DIR)"
                )
                raise ConfigError(f"benchmark {item!r}: file not found: {path}{hint}")
        else:
            path = Path(item).expanduser()
            if not (path.suffix in CUSTOM_SUFFIXES and path.is_file()):
                raise ConfigError(
                    f"--benchmarks: {item!r} is neither a known benchmark ({', '.join(sorted(REGISTRY))}) "
                    f"nor an existing {'/'.join(CUSTOM_SUFFIXES)} file"
                )
            name, registered = _slug(path.stem), False
        if any(b.name == name for b in out):
            raise ConfigError(f"--benchmarks: two benchmarks would both be called {name!r}")
        k = n_for.get(name, n)
        if k < 1:
            raise ConfigError(f"benchmark {name!r}: samples per question must be >= 1, got {k}")
        out.append(Benchmark(name=name, path=path, n=k, registered=registered))
    chosen = {b.name for b in out}
    for option, mapping in (("--n-for", n_for), ("--benchmark-file", files)):
        unused = sorted(set(mapping) - chosen)
        if unused:
            raise ConfigError(
                f"{option}: {', '.join(unused)} not among the chosen benchmarks {sorted(chosen)}"
            )
    return out
