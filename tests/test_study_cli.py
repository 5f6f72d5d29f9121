"""The study CLI end to end on the smoke preset, and its resumability."""

import json
import os
import subprocess

import pytest

from tests.specs import smoke_study_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_study(workdir, *overrides):
    command = smoke_study_command(workdir, *overrides)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _rows(workdir):
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_smoke_study_writes_every_row_a_table_and_plots(tmp_path):
    result = _run_study(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path)
    keys = {(r["encoding"], r["task"], r["seed"], r["eval_length"]) for r in rows}
    assert keys == {(e, "copy", 0, n) for e in ("nope", "sinusoidal") for n in (3, 6, 12, 24)}
    assert len(rows) == len(keys)
    for row in rows:
        assert 0.0 <= row["token_accuracy"] <= 1.0 and 0.0 <= row["sequence_accuracy"] <= 1.0
    table = open(os.path.join(tmp_path, "table.md")).read()
    assert "| nope |" in table and "| sinusoidal |" in table
    assert "1N (3)" in table and "8N (24)" in table
    assert table.strip() in result.stdout
    for metric in ("sequence_accuracy", "token_accuracy"):
        assert os.path.getsize(os.path.join(tmp_path, "plots", f"copy_{metric}.png")) > 1000

    # A re-run finds every cell finished: it trains nothing and writes no row twice.
    again = _run_study(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _rows(tmp_path) == rows
    assert "copy/nope" not in again.stderr


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.encodings=('sinusoidal','nonsense')", "unknown encoding 'nonsense'"),
        ("--config.tasks=('copy','juggling')", "unknown task"),
        ("--config.eval_multipliers=(0.5,1)", "at least the train length"),
        ("--config.train_length=0", "train_length must be positive"),
        ("--config.not_a_key=3", "not_a_key"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, override, message):
    result = _run_study(tmp_path, override)
    assert result.returncode != 0
    assert message in result.stderr
    assert not os.path.exists(os.path.join(tmp_path, "results.jsonl"))


@pytest.mark.parametrize("preset", ["smoke", "quick", "full"])
def test_every_preset_is_valid(preset):
    """Every preset names registered encodings and tasks and builds every cell's model."""
    import importlib

    from experiments.length_extrapolation import validate

    config = importlib.import_module(f"experiments.configs.{preset}").get_config()
    validate(config)
    if preset == "quick":
        families = {"nope", "sinusoidal", "rope", "alibi", "cope", "randomized_rope"}
        assert families <= set(config.encodings) and len(config.encodings) >= 8
        assert len(config.tasks) >= 2 and len(config.seeds) >= 2
