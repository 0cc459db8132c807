"""Reward plug-ins: ``method=package.module:ClassName`` (or a name user code registered) loads a user
``RewardMethod``; config validation reads the registry, and a path that names nothing usable is one clear
ConfigError. The README's example (``plugin_example.py`` beside this file) trains through the real CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from corewarding.cli import main
from corewarding.config import load_config
from corewarding.errors import ConfigError
from corewarding.rewards import REGISTRY, RewardMethod, RewardOutput, get_reward_method, method_class
from corewarding.training.memory_plan import settings_from_config

TINY = "configs/tiny-cpu.yaml"
PLUGIN = "plugin_example:LengthPenalizedVote"
HERE = Path(__file__).parent


@pytest.fixture
def plugin_path(monkeypatch):
    """``plugin_example`` importable, as an installed package (or one on PYTHONPATH) would be."""
    monkeypatch.syspath_prepend(str(HERE))
    return PLUGIN


def test_import_path_loads_the_plugin_and_passes_validation(plugin_path, tmp_path):
    from plugin_example import LengthPenalizedVote

    assert method_class(plugin_path) is LengthPenalizedVote
    assert PLUGIN not in REGISTRY and LengthPenalizedVote.name not in REGISTRY  # loading registers nothing
    cfg = load_config(TINY, [f"method={plugin_path}", f"output_dir={tmp_path}", "reward.extraction=boxed"])
    assert cfg.method == PLUGIN
    assert cfg.run_dir == tmp_path / "length_penalized_vote"  # the method's name, not its import path
    assert get_reward_method(cfg.method, extraction="boxed").extraction == "boxed"
    # every other reader of the method name resolves the plug-in the same way
    assert settings_from_config(cfg, gpus=1).method == PLUGIN


def test_plugin_options_come_from_method_options(plugin_path):
    cfg = load_config(TINY, [f"method={plugin_path}", "method_options.length_penalty=0.5"])
    assert cfg.method_options == {"length_penalty": 0.5}
    with pytest.raises(
        ConfigError, match=r"method_options.bogus=1: expected an option of method .*length_penalty"
    ):
        load_config(TINY, [f"method={plugin_path}", "method_options.bogus=1"])
    with pytest.raises(
        ConfigError, match=r"method_options.extraction='boxed': expected to be set as reward.extraction"
    ):
        load_config(TINY, [f"method={plugin_path}", "method_options.extraction=boxed"])
    with pytest.raises(
        ConfigError, match=r"method_options.length_penalty=0.5: expected an option of method gt"
    ):
        load_config(TINY, ["method=gt", "method_options.length_penalty=0.5"])


def test_a_method_registered_by_user_code_passes_validation(monkeypatch, tmp_path):
    class Constant(RewardMethod):
        name = "constant_half"
        needs_rephrased = True

        def score(self, groups):
            return RewardOutput([[0.5] * g.size for g in groups], [None] * len(groups))

    with pytest.raises(ConfigError, match="method='constant_half'"):
        load_config(TINY, ["method=constant_half"])
    monkeypatch.setitem(REGISTRY, "constant_half", Constant)  # what corewarding.rewards.register does
    cfg = load_config(TINY, ["method=constant_half", f"output_dir={tmp_path}"])
    assert cfg.run_dir == tmp_path / "constant_half"
    # validation reads the method's flags, not a list of names: it needs rephrased data like co_rewarding_i
    with pytest.raises(ConfigError, match="constant_half needs rephrased data"):
        load_config(TINY, ["method=constant_half", "data.train_rephrased=null"])


class NotAMethod:
    pass


class Unfinished(RewardMethod):
    name = "unfinished"


class Nameless(RewardMethod):
    def score(self, groups):
        raise AssertionError("never scored")


NOT_A_CLASS = 3


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            "no_such_plugin_pkg.rewards:Vote",
            r"method='no_such_plugin_pkg.rewards:Vote': no module named 'no_such_plugin_pkg'",
        ),
        ("corewarding.rewards.nope:Vote", r"no module named 'corewarding.rewards.nope'"),
        (f"{__name__}:Missing", rf"module '{__name__}' has no attribute 'Missing'; expected an import path"),
        (
            f"{__name__}:NotAMethod",
            r"NotAMethod is the class .*NotAMethod, not a RewardMethod; expected a subclass",
        ),
        (f"{__name__}:NOT_A_CLASS", r"NOT_A_CLASS is an object of type int, not a RewardMethod"),
        (f"{__name__}:Unfinished", r"Unfinished is abstract \(it does not implement score\)"),
        (f"{__name__}:Nameless", r"Nameless must set the class attribute name"),
        ("not a path:X", r"method='not a path:X': expected a registered name or an import path"),
        (
            "reinforce",
            r"method='reinforce': unknown reward method 'reinforce'; expected a registered name \(co_",
        ),
    ],
)
def test_a_path_naming_nothing_usable_is_one_clear_error(method, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [f"method={method}"])


def test_a_plugin_in_the_current_directory_is_found(tmp_path, monkeypatch):
    # the console script's sys.path lacks the current directory (python -m has it): it is tried last
    (tmp_path / "cwd_plugin_mod.py").write_text(
        "from corewarding.rewards import RewardMethod, RewardOutput\n"
        "class Zero(RewardMethod):\n"
        "    name = 'zero'\n"
        "    def score(self, groups):\n"
        "        return RewardOutput([[0.0] * g.size for g in groups], [None] * len(groups))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_plugin_mod", raising=False)
    assert method_class("cwd_plugin_mod:Zero").name == "zero"
    monkeypatch.delitem(sys.modules, "cwd_plugin_mod", raising=False)


@pytest.mark.slow
def test_plugin_trains_two_steps_through_the_cli(plugin_path, tmp_path, capsys):
    """``corewarding train configs/tiny-cpu.yaml method=plugin_example:LengthPenalizedVote total_steps=2``"""
    args = ["train", TINY, f"method={plugin_path}", "total_steps=2", f"output_dir={tmp_path}"]
    code = main([*args, "method_options.length_penalty=0.5", "save_every=2", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "length_penalized_vote"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        # only this plug-in reports a length penalty, and its rewards are agreement minus that penalty
        penalty = row["length_penalty/mean"]
        assert 0 < penalty <= 0.5
        assert row["reward/mean"] == pytest.approx(row["pseudo_label/agreement"] - penalty)
        assert row["reward/mean"] < 0 or row["pseudo_label/agreement"] > 0
        assert "pseudo_label/vote_share" in row and "grad_norm" in row
    saved = load_config(run / "config.yaml")
    assert (saved.method, saved.method_options) == (PLUGIN, {"length_penalty": 0.5})
    assert json.loads((run / "checkpoint-2" / "state" / "state.json").read_text())["method"] == PLUGIN


class _Typed(RewardMethod):
    name = "typed"
    option_defaults: ClassVar[dict[str, float]] = {"scale": 1.0}

    def score(self, groups):
        return RewardOutput([[self.scale] * g.size for g in groups], [None] * len(groups))


def test_plugin_option_types_are_checked_when_the_method_is_made():
    with pytest.raises(ConfigError, match=r"reward method 'typed': option scale='big' has type str"):
        get_reward_method(f"{__name__}:_Typed", scale="big")
    assert get_reward_method(f"{__name__}:_Typed", scale=2).scale == 2.0


def test_micro_world_compare_takes_a_plugin_as_a_method(plugin_path, tmp_path):
    from corewarding.microworld.compare import add_arguments, run
    from corewarding.microworld.experiment import Budget, is_variant, train_config, variant_dir_name

    assert is_variant(plugin_path) and is_variant("co_rewarding_ii_frozen") and not is_variant("reinforce")
    setup = SimpleNamespace(data_dir=tmp_path, base_model=tmp_path / "base")
    cfg = train_config(setup, plugin_path, Budget(steps=2), tmp_path, variant_dir_name(plugin_path))
    assert cfg.method == PLUGIN and cfg.run_dir == tmp_path / "LengthPenalizedVote"
    with pytest.raises(ConfigError, match="no module named 'no_such_plugin_pkg'"):
        train_config(setup, "no_such_plugin_pkg:Vote", Budget(steps=2), tmp_path, "x")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ConfigError, match=r"--methods 'gt,reinforce': unknown \['reinforce'\]"):
        run(parser.parse_args(["--methods", "gt,reinforce", "--out", str(tmp_path / "cmp")]))
