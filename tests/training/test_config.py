"""Config validation: bad configs fail with one clear message before any model loads."""

from __future__ import annotations

from pathlib import Path

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


def test_rollout_temperature_must_sample_and_validation_may_be_greedy():
    """GRPO compares sampled rollouts within a group; validation may decode greedily (both engines can)."""
    for value in ("0", "-0.5"):
        with pytest.raises(ConfigError, match=r"rollout\.temperature=.*GRPO needs sampled rollouts"):
            load_config(TINY, [f"rollout.temperature={value}"])
    cfg = load_config(TINY, ["validation.temperature=0", "validation.max_new_tokens=null", "data.limit=null"])
    assert (cfg.validation.temperature, cfg.validation.max_new_tokens, cfg.data.limit) == (0.0, None, None)
    with pytest.raises(ConfigError, match=r"validation\.temperature=-1\.0: expected a temperature ≥ 0"):
        load_config(TINY, ["validation.temperature=-1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=nan", "optim.lr=nan: expected a positive number"),
        ("optim.lr=0", "optim.lr=0.0: expected a positive number"),
        ("optim.grad_clip=inf", "optim.grad_clip=inf"),
        (
            "optim.betas=[0.9,1.0]",
            r"optim.betas=\[0.9, 1.0\]: expected a list of 2 numbers, each a fraction in \[0, 1\)",
        ),
        ("optim.betas=[0.9]", "optim.betas"),
        ("optim.min_lr_ratio=1.5", r"a fraction in \[0, 1\]"),
        ("optim.warmup_ratio=1", r"a fraction in \[0, 1\)"),
        ("grpo.adv_eps=0", "grpo.adv_eps"),
        ("grpo.kl_coef=-0.1", "grpo.kl_coef"),
        ("rollout.top_p=0", r"rollout.top_p=0.0: expected a fraction in \(0, 1\]"),
        ("teacher.a_end=0", "teacher.a_end"),
        ("data.val_limit=0", "data.val_limit=0: expected a positive integer, or null"),
        ("trainer.seed=4294967296", r"a seed in \[0, 2\*\*32\)"),
        # LoRA's numbers are checked whether or not LoRA is on: a wrong value is a mistake either way
        ("model.lora.dropout=1.0", "model.lora.dropout"),
    ],
)
def test_numeric_fields_are_checked_against_their_domain(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_domains_are_checked_on_configs_built_in_python_too():
    import dataclasses

    from corewarding.config import validate_config

    cfg = load_config(TINY)
    bad = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=float("nan")))
    with pytest.raises(ConfigError, match=r"optim\.lr=nan"):
        validate_config(bad)


def test_a_refused_value_is_blamed_on_the_file_or_the_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: " + str(Path(TINY).resolve()) + "\noptim:\n  lr: fast\n")
    with pytest.raises(
        ConfigError, match=rf"invalid config in {path}: .*\(key: optim.lr\); expected a positive"
    ):
        load_config(path)
    with pytest.raises(
        ConfigError, match=r"^override lr=fast: .*\(key: optim.lr\); expected a positive number$"
    ):
        load_config(TINY, ["lr=fast"])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- method: gt\n", "its top level is a list"),
        ("gt\n", "its top level is the single value 'gt'"),
        ("", "is empty"),
        ("# a comment\n", "is empty"),
        ("null\n", "is empty"),
    ],
)
def test_config_file_must_be_a_mapping(tmp_path, text, says):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path}.*{says}; expected a mapping of config keys"):
        load_config(path)
    child = tmp_path / "child.yaml"
    child.write_text("base: c.yaml\nmethod: gt\n")
    with pytest.raises(ConfigError, match=f"config file {path}"):
        load_config(child)


def test_invalid_yaml_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: gt\nrollout: [1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line 3, column 1: ") as err:
        load_config(path)
    assert "\n" not in str(err.value)
