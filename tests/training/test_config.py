"""Config validation: bad configs fail with one clear message before any model loads."""

from __future__ import annotations

import pytest

from corewarding.cli import main
from corewarding.config import load_config
from corewarding.errors import ConfigError

TINY = "configs/tiny-cpu.yaml"


def test_paper_configs_load_with_paper_settings():
    cfg = load_config("configs/paper/co_rewarding_i.yaml")
    assert (cfg.method, cfg.grpo.kl_coef, cfg.rollout.n, cfg.optim.lr) == ("co_rewarding_i", 0.005, 8, 3e-6)
    assert (cfg.trainer.batch_questions, cfg.data.max_prompt_length, cfg.rollout.max_new_tokens) == (
        128,
        512,
        3072,
    )
    cfg2 = load_config("configs/paper/co_rewarding_ii.yaml")
    assert (cfg2.grpo.kl_coef, cfg2.teacher.a_start, cfg2.teacher.a_end, cfg2.teacher.ema) == (
        0.001,
        0.01,
        1e-4,
        True,
    )
    assert load_config("configs/paper/co_rewarding_ii_frozen.yaml").teacher.ema is False
    assert load_config("configs/paper/majority_vote_rephrased.yaml").data.view == "rephrased"


def test_short_and_dotted_overrides():
    cfg = load_config(TINY, ["method=entropy", "total_steps=7", "grpo.kl_coef=0", "output_dir=/x"])
    assert (cfg.method, cfg.trainer.total_steps, cfg.grpo.kl_coef, cfg.trainer.output_dir) == (
        "entropy",
        7,
        0.0,
        "/x",
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.bogus=1"], "bogus"),
        (["total_steps=abc"], "trainer.total_steps"),
        (["method=reinforce"], "method='reinforce'"),
        (["method=co_rewarding_i", "data.train_rephrased=null"], "needs rephrased data"),
        (["rollout.n=1"], "rollout.n"),
        (["lr"], "expected key=value"),
        (["data.view=sideways"], "data.view"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(TINY, overrides)


def test_cli_reports_config_error_without_traceback(capsys, tmp_path):
    # model.name_or_path points at a directory that does not exist: validation must fail first anyway
    code = main(["train", TINY, "method=nope", f"output_dir={tmp_path}", "model.name_or_path=/nonexistent"])
    err = capsys.readouterr().err
    assert code == 2
    assert "method='nope'" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing may be written before validation passes"


def test_missing_config_file_and_base_chain(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\nmethod: gt\n")
    with pytest.raises(ConfigError, match=r"parent.yaml not found \(named as base by"):
        load_config(child)
