#!/usr/bin/env python3
"""Build the project's virtual environment: ``make`` runs this when ``.venv`` is missing or stale.

    python3 scripts/install_venv.py VENV TORCH_SPEC PACKAGE_SPEC

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
        if run([*cmd, "-q", *requirements], env=env):
            return
        print("uv could not install the requirements; falling back to pip", flush=True)
    if not run([python, "-m", "pip", "install", "-q", *requirements]):
        sys.exit(f"installing {' '.join(requirements)} failed")


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    root, torch_spec, package = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    python = str(root / "bin" / "python")
    if not Path(python).exists():
        venv.create(root, with_pip=True)
    has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    install(python, ([] if has_torch else [torch_spec]) + ["-e", package])


if __name__ == "__main__":
    main()
