"""Every number a user can give is checked against its domain at once: exit 2, one line, no traceback.

The issue's rule: a bad value is "exit 2, one line naming the file, field or value and what was expected,
before loading a model where the check does not need one". These tests enforce it by introspection rather
than by a hand-kept list, so a new option or config field cannot slip past:

- every command-line option whose values are numbers must use a ``corewarding.arguments.Number`` type, and
  each of that type's ``bad_values`` is fed to ``corewarding.cli.main`` in-process;
- every numeric field of the training ``Config`` (found by walking its dataclasses) must have a domain in
  ``corewarding.config.FIELD_DOMAINS``, and NaN, ±inf and values outside that domain are fed to
  ``corewarding train CONFIG key=value`` with training replaced by a stub that fails loudly, so a value that
  got through validation would be caught before any model could load.

Everything runs in this process (no subprocess per case), so the few hundred cases take seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from corewarding.arguments import Number
from corewarding.cli import COMMANDS, build_parser, main
from corewarding.config import FIELD_DOMAINS, Config, NumberList

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny-cpu.yaml")

# harmless values for required positionals and options (by dest); anything else gets "x". A bad value fails
# while the arguments are parsed, so these only have to parse.
HARMLESS = {"config": TINY, "question": "1+1", "file": "predictions.jsonl", "out": "out"}


class CommandRan(AssertionError):
    """A command's ``run`` was reached: the value under test got through parsing or validation."""


# ------------------------------------------------------------------------------------- command-line options
def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _takes_numbers(action: argparse.Action) -> bool:
    """Whether an option's values are numbers: a numeric type, or a numeric default with no type at all
    (argparse would then hand the command a string)."""
    if action.nargs == 0 or isinstance(action, argparse._HelpAction):
        return False  # flags: store_true, store_const, count, help, version
    if isinstance(action.type, Number) or action.type in (int, float):
        return True
    default = action.default
    return action.type is None and isinstance(default, int | float) and not isinstance(default, bool)


def _numeric_options() -> list[tuple[str, argparse.Action]]:
    return [
        (name, action)
        for name, parser in _subcommands().items()
        for action in parser._actions
        if action.option_strings and _takes_numbers(action)
    ]


def _flag(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)  # the long form


def _valid(number: Number) -> str:
    return next(text for text in ("1", "2", "0", "0.5", "8") if _accepts_text(number, text))


def _accepts_text(number: Number, text: str) -> bool:
    try:
        number(text)
    except argparse.ArgumentTypeError:
        return False
    return True


def _required_argv(parser: argparse.ArgumentParser, skip: argparse.Action) -> list[str]:
    """Harmless values for the command's required positionals and options."""
    argv: list[str] = []
    for action in parser._actions:
        if action is skip or isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings and not action.required:
            continue
        if not action.option_strings and action.nargs in ("*", "?"):
            continue
        if action.choices:
            value = str(next(iter(action.choices)))
        elif isinstance(action.type, Number):
            value = _valid(action.type)
        else:
            value = HARMLESS.get(action.dest, "x")
        argv += [f"{_flag(action)}={value}"] if action.option_strings else [value]
    return argv


NUMERIC_OPTIONS = _numeric_options()
BAD_OPTION_VALUES = [
    pytest.param(name, action, value, id=f"{name} {_flag(action)}={value!r}")
    for name, action in NUMERIC_OPTIONS
    if isinstance(action.type, Number)
    for value in action.type.bad_values
]


@pytest.fixture
def commands_must_not_run(monkeypatch):
    """Replace every command's ``run`` (read by ``build_parser``) with one that fails the test."""

    def refuse(args):
        raise CommandRan(f"corewarding {args.command} ran: a bad value got through ({vars(args)})")

    for module, _ in COMMANDS.values():
        monkeypatch.setattr(importlib.import_module(module), "run", refuse)


def test_the_sweep_finds_the_numeric_options():
    found = {(name, _flag(action)) for name, action in NUMERIC_OPTIONS}
    assert {("demo", "--steps"), ("compare", "--group-size"), ("plan", "--margin")} <= found


@pytest.mark.parametrize(
    ("name", "action"), [pytest.param(n, a, id=f"{n} {_flag(a)}") for n, a in NUMERIC_OPTIONS]
)
def test_numeric_option_declares_its_domain(name, action):
    assert isinstance(action.type, Number), (
        f"corewarding {name} {_flag(action)}: type={action.type!r}; use a corewarding.arguments number type "
        "(POSITIVE_INT, FRACTION, Number(...)) so a bad value is one argparse line"
    )


@pytest.mark.parametrize(("name", "action", "value"), BAD_OPTION_VALUES)
def test_bad_option_value_is_one_line_and_exit_2(name, action, value, capsys, commands_must_not_run):
    parser = _subcommands()[name]
    argv = [name, f"{_flag(action)}={value}", *_required_argv(parser, skip=action)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert _flag(action) in errors[0] and "expected" in errors[0], err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------ training config
def _numeric_leaves(cls: type = Config, prefix: str = "") -> dict[str, tuple[type, bool]]:
    """Dotted path -> (int, float or list, may be null) for every numeric field under ``cls``."""
    leaves: dict[str, tuple[type, bool]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, path = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            leaves.update(_numeric_leaves(hint, f"{path}."))
            continue
        args = typing.get_args(hint)
        optional = type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType)
        base = next(a for a in args if a is not type(None)) if optional else hint
        if base in (int, float):
            leaves[path] = (base, optional)
        elif typing.get_origin(base) is list and typing.get_args(base)[0] in (int, float):
            leaves[path] = (list, optional)
    return leaves


NUMERIC_FIELDS = _numeric_leaves()


def _bad_field_values(path: str) -> list[str]:
    domain = FIELD_DOMAINS[path]
    _, optional = NUMERIC_FIELDS[path]
    if isinstance(domain, NumberList):
        outside = [v for v in domain.each.bad_values if v not in ("abc", "")]
        values = ["0.5", "[0.5]", "[0.5, 0.5, 0.5]", "[nan, 0.5]", "[0.5, inf]"]
        values += [f"[{v}, 0.5]" for v in outside]
    else:
        # "" is null to OmegaConf: a bad value only where the schema refuses null
        values = [v for v in domain.bad_values if v or not optional] + ["nan", "inf", "-inf"]
    return list(dict.fromkeys(values))


BAD_FIELD_VALUES = [
    pytest.param(path, value, id=f"{path}={value!r}")
    for path in NUMERIC_FIELDS
    if path in FIELD_DOMAINS
    for value in _bad_field_values(path)
]


@pytest.fixture
def training_must_not_start(monkeypatch):
    """``corewarding train`` imports ``train`` from this module after validation: make it fail loudly."""

    def refuse(cfg, **_):
        raise CommandRan("training started (a model would load): the config passed validation")

    fake = types.ModuleType("corewarding.training.trainer")
    fake.train = refuse
    monkeypatch.setitem(sys.modules, "corewarding.training.trainer", fake)


def test_every_numeric_config_field_has_a_domain():
    assert {"optim.betas", "rollout.temperature", "data.limit", "model.lora.alpha"} <= set(NUMERIC_FIELDS)
    missing = sorted(set(NUMERIC_FIELDS) - set(FIELD_DOMAINS))
    assert not missing, (
        f"numeric config fields without a domain in corewarding.config.FIELD_DOMAINS: {missing}"
    )
    stale = sorted(set(FIELD_DOMAINS) - set(NUMERIC_FIELDS))
    assert not stale, f"FIELD_DOMAINS names fields that are not numeric fields of Config: {stale}"


def test_the_small_config_reaches_training(training_must_not_start, capsys):
    """The sweep's control: without a bad value the stub is reached, so the sweep can see a value slip by."""
    with pytest.raises(CommandRan):
        main(["train", TINY, "--no-progress"])


@pytest.mark.parametrize(("path", "value"), BAD_FIELD_VALUES)
def test_bad_config_value_is_one_line_before_any_model(path, value, capsys, training_must_not_start):
    assert main(["train", TINY, "--no-progress", f"{path}={value}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("corewarding train: error: ") and path in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- method: gt\n- rollout: {n: 4}\n", "its top level is a list"),
        ("co_rewarding_i\n", "its top level is the single value 'co_rewarding_i'"),
        ("3\n", "its top level is the single value '3'"),
        ("", "is empty"),
        ("# nothing but a comment\n", "is empty"),
    ],
    ids=["list", "word", "number", "empty", "comment"],
)
def test_config_file_that_is_not_a_mapping_is_one_line(tmp_path, text, says, capsys, training_must_not_start):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and says in err and "expected a mapping of config keys" in err, err


# ------------------------------------------------------------------------------------------- output folders
@pytest.fixture
def no_microworld_work(monkeypatch):
    """Writing the world or getting a base model means the command went past its checks."""
    from corewarding.microworld import base_model, experiment

    def refuse(*args, **kwargs):
        raise CommandRan("the micro-world command started working before refusing its settings")

    monkeypatch.setattr(experiment, "prepare", refuse)
    monkeypatch.setattr(base_model, "build_shipped_base", refuse)
    monkeypatch.setattr(base_model, "pretrain_base_model", refuse)


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_output_folder_that_is_a_file_is_refused_first(command, tmp_path, capsys, no_microworld_work):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert main([command, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out={str(out)!r} is a regular file" in err, err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main([command, "--out", str(blocked / "sub"), "--no-progress"]) == 2
    assert "--out=" in capsys.readouterr().err


def test_output_folder_that_cannot_be_written_is_refused_first(
    tmp_path, monkeypatch, capsys, no_microworld_work
):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.name == "posix" and os.geteuid() == 0:
        # root writes through any mode bits: make the write probe fail as a read-only folder would
        from corewarding import files

        def read_only(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    locked.chmod(0o500)
    try:
        assert main(["demo", "--out", str(locked), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot write there" in err, err
    finally:
        locked.chmod(0o700)


def test_cache_dir_that_is_a_file_is_refused_first(tmp_path, capsys, no_microworld_work):
    cache = tmp_path / "cache"
    cache.write_text("")
    assert main(["demo", "--out", str(tmp_path / "out"), "--cache-dir", str(cache)]) == 2
    assert f"--cache-dir={str(cache)!r} is a regular file" in capsys.readouterr().err


def test_compare_refuses_a_method_that_cannot_train_before_any_work(tmp_path, capsys, no_microworld_work):
    """A plug-in path passes the name check; the config it makes is validated before the world exists."""
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), "--methods", "gt,no_such_pkg.rewards:Nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_pkg" in err, err
    assert not (out / "data").exists()


def test_build_base_refuses_an_output_that_is_a_file(tmp_path, monkeypatch, capsys, no_microworld_work):
    from corewarding.microworld import base_model

    target = tmp_path / "shipped_base"
    target.write_text("")
    monkeypatch.setattr(base_model, "SHIPPED_DIR", target)
    assert main(["build-base", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "regular file" in err, err


def test_demo_steps_0_fails_at_once_from_the_console(tmp_path):
    """The one subprocess: the real entry point exits 2 in well under a second, writing nothing."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "corewarding", "demo", "--steps", "0", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "argument --steps: '0': expected a positive integer" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
