#!/usr/bin/env python3
"""Build the project's virtual environment: ``make`` runs this when ``.venv`` is missing or stale.

    python3 scripts/install_venv.py VENV TORCH_SPEC PACKAGE_SPEC LOCK_FILE
    python3 scripts/install_venv.py --compile VENV EXTRA LOCK_FILE    (``make lock``)

The lock files (``requirements/demo.lock``, ``requirements/test.lock``) pin every dependency except torch
to the versions the tests passed with, so a fresh machine installs exactly those; ``--compile`` rewrites
one from ``pyproject.toml`` with uv's resolver (torch held at the venv's own version, so the lock holds
no CUDA packages when the venv's torch is a CPU build). ``tests/test_lock_files.py`` fails when
``pyproject.toml`` asks for something a lock does not satisfy.

Installs with uv when it can, because pip spends most of a first ``make demo`` resolving and unpacking
(measured on a 2-core machine with local package indexes: 41 s with pip, 13 s with uv including
installing uv itself). uv does not read pip's configuration, and these machines reach the registries
through it (extra indexes, find-links, a constraints file, a CA bundle), so the settings pip reports in
``pip config list`` are handed to uv as the equivalent options. Anything that goes wrong on the uv path
falls back to plain pip, so the result never depends on uv being available.

torch is installed only when the venv has none (``TORCH_SPEC``, a CPU wheel on these machines), so a
venv that already holds a CUDA build keeps it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path


def run(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    print("+", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, env=env).returncode == 0


def pip_settings(python: str) -> dict[str, list[str]]:
    """``pip config list`` as {option: values} (environment variables included, later entries win)."""
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        settings[name] = shlex.split(value.strip().strip("'\""))
    return settings


def uv_command(python: str, settings: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """The ``uv pip install`` prefix that reaches the same packages pip would, and its environment."""
    cmd = [python, "-m", "uv", "pip", "install", "--python", python, "--index-strategy", "unsafe-best-match"]
    for url in settings.get("index-url", []):
        cmd += ["--index-url", url]
    for url in settings.get("extra-index-url", []):
        cmd += ["--extra-index-url", url]
    for path in settings.get("find-links", []):
        cmd += ["--find-links", path]
    for path in settings.get("constraint", []):
        cmd += ["--constraint", path]
    env = dict(os.environ)
    cert = settings.get("cert")
    if cert:
        env.setdefault("SSL_CERT_FILE", cert[0])
    return cmd, env


def install(python: str, requirements: list[str]) -> None:
    """Install ``requirements`` with uv if possible, else with pip; exits on failure."""
    has_uv = subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0
    if has_uv or run([python, "-m", "pip", "install", "-q", "uv"]):
        cmd, env = uv_command(python, pip_settings(python))
        # byte-compile now, as pip does: uv leaves it to the first import, and where PYTHONDONTWRITEBYTECODE
        # is set (these machines) every process then compiles torch and transformers from source again
        # (measured: a test that launches 3 training processes took 57 s instead of 34 s)
        if run([*cmd, "--compile-bytecode", "-q", *requirements], env=env):
            return
        print("uv could not install the requirements; falling back to pip", flush=True)
    if not run([python, "-m", "pip", "install", "-q", *requirements]):
        sys.exit(f"installing {' '.join(requirements)} failed")


def compile_lock(python: str, extra: str, lock: Path) -> None:
    """Resolve ``pyproject.toml`` (with ``extra`` unless it is ``-``) into ``lock``, torch left out."""
    torch_version = subprocess.run(
        [python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    held = lock.with_suffix(".torch.tmp")
    held.write_text(f"torch=={torch_version}\n")
    cmd, env = uv_command(python, pip_settings(python))
    cmd[cmd.index("install")] = "compile"
    at = cmd.index("--python")
    del cmd[at : at + 2]  # compile resolves for --python-version, not for the venv
    cmd += ["pyproject.toml", "--python-version", "3.11", "--constraint", str(held)]
    cmd += ["--no-emit-package", "torch", "--no-annotate", "--no-header", "-q", "-o", str(lock)]
    if extra != "-":
        cmd += ["--extra", extra]
    try:
        if not run(cmd, env=env):
            sys.exit(f"could not resolve pyproject.toml into {lock}")
    finally:
        held.unlink(missing_ok=True)
    header = (
        f"# make lock: {'pyproject.toml' if extra == '-' else f'pyproject.toml [{extra}]'} resolved with torch "
        f"{torch_version} held (torch itself is installed from TORCH_SPEC, not from here)\n"
    )
    lock.write_text(header + lock.read_text())


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--compile":
        root, extra, lock = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
        python = str(root / "bin" / "python")
        if subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode != 0:
            run([python, "-m", "pip", "install", "-q", "uv"])
        compile_lock(python, extra, lock)
        return
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    root, torch_spec, package, lock = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    python = str(root / "bin" / "python")
    if not Path(python).exists():
        venv.create(root, with_pip=True)
    has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    install(python, ["-r", lock] + ([] if has_torch else [torch_spec]) + ["-e", package])


if __name__ == "__main__":
    main()
