"""The ``corewarding`` command: every subcommand is wired, --help and --version work without heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corewarding import __version__
from corewarding.cli import COMMANDS, main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"corewarding {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: corewarding " + name in capsys.readouterr().out


def test_console_script_help_is_light():
    code = "import sys, corewarding.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "building the parser must not import torch"


def test_no_progress_also_silences_transformers_loading_bars(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # other tests' --quiet runs may have switched it off in this process
    try:
        # a missing config fails fast, after the flag has been applied
        assert main(["train", str(tmp_path / "missing.yaml"), "--no-progress"]) == 2
        assert "missing.yaml" in capsys.readouterr().err
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
