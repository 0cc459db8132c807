"""Report files go through corewarding.files: a figure or plan whose write fails leaves the old file whole.

Before, ``savefig`` wrote straight onto the target, so a run killed while plotting (or a full disk) left a
truncated PNG where the last good one had been; the plan's JSON and the report tables had their own
temporary-file helpers with other rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from corewarding.cli import main
from corewarding.errors import DataError
from corewarding.reporting import tables
from corewarding.reporting.plots import plot_comparison, plot_run
from corewarding.training import memory_plan


def _write_run(path: Path, steps: int = 12) -> Path:
    path.mkdir(parents=True)
    rows = [{"step": s, "reward/mean": 0.1 * s, "response_length/mean": 30.0 + s} for s in range(1, steps)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _failing_savefig(monkeypatch: pytest.MonkeyPatch) -> None:
    """``savefig`` that writes half an image to the name it is given and then fails (a full disk)."""

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig)


def test_failed_plot_keeps_the_previous_png_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _write_run(tmp_path / "run")
    written = plot_run(run)
    before = {p.name: p.read_bytes() for p in written}
    assert before and all(b.startswith(b"\x89PNG") for b in before.values())

    _failing_savefig(monkeypatch)
    open_figures = plt.get_fignums()
    with pytest.raises(OSError, match="No space left"):
        plot_run(run)
    after = {p.name: p.read_bytes() for p in (run / "plots").iterdir()}
    assert after == before  # the old figures, whole; no temporary files beside them
    assert plt.get_fignums() == open_figures  # the figure was closed although saving failed


def test_failed_comparison_figure_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = {"a": _write_run(tmp_path / "a"), "b": _write_run(tmp_path / "b")}
    out = plot_comparison(runs, tmp_path / "fig" / "comparison.png")
    good = out.read_bytes()
    _failing_savefig(monkeypatch)
    open_figures = plt.get_fignums()
    with pytest.raises(OSError):
        plot_comparison(runs, out)
    assert out.read_bytes() == good
    assert [p.name for p in out.parent.iterdir()] == ["comparison.png"]
    assert plt.get_fignums() == open_figures


def test_report_modules_keep_no_write_helpers_of_their_own() -> None:
    """One policy for files: the duplicated temporary-file writers are gone, callers use corewarding.files."""
    assert not hasattr(tables, "write_atomic") and not hasattr(tables, "write_json")
    assert not hasattr(memory_plan, "write_json")


def test_plan_json_is_written_atomically_over_an_old_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "model" / "config.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps(
            {
                "model_type": "qwen3",
                "vocab_size": 1024,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 16,
                "tie_word_embeddings": True,
            }
        )
    )
    out = tmp_path / "plan" / "plan.json"
    out.parent.mkdir()
    out.write_text("old")
    args = ["plan", "configs/paper/co_rewarding_ii.yaml", "--model-config", str(config), "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["model"]["shape"]["hidden_size"] == 64
    assert [p.name for p in out.parent.iterdir()] == ["plan.json"]
    capsys.readouterr()


def test_plan_model_config_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(b'{"model_type": "qwen3",\n "name": "caf\xe9"}')
    with pytest.raises(DataError, match=r"config\.json: line 2: byte b'\\xe9'.*expected UTF-8 JSON"):
        memory_plan.load_model_shape("unused", config)
