"""The study CLI end to end on the smoke preset, and its resumability."""

import json
import os
import shutil
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
    # Every length in [N, 2N] (N = 3), then 4N and 8N.
    lengths = (3, 4, 5, 6, 12, 24)
    assert keys == {(e, "copy", 0, n) for e in ("nope", "sinusoidal") for n in lengths}
    assert len(rows) == len(keys)
    for row in rows:
        assert 0.0 <= row["token_accuracy"] <= 1.0 and 0.0 <= row["sequence_accuracy"] <= 1.0
        assert row["min_train_length"] == 1 and row["package_version"]
        assert "git_commit" in row
    table = open(os.path.join(tmp_path, "table.md")).read()
    assert "| nope | 1 |" in table and "| sinusoidal | 1 |" in table
    assert "1N (3)" in table and "| 4 |" in table and "8N (24)" in table
    assert "RPE score" in table and "NoPE score" in table
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
        ("--config.seeds=(0,0)", "seeds repeats [0]"),
        ("--config.encodings=('nope','nope')", "encodings repeats ['nope']"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, override, message):
    result = _run_study(tmp_path, override)
    assert result.returncode != 0
    assert message in result.stderr
    assert not os.path.exists(os.path.join(tmp_path, "results.jsonl"))


@pytest.mark.parametrize(
    "preset",
    ["smoke", "quick", "hybrid", "full", "paper_nope", "paper_rpe", "lm", "lm_quick", "arithmetic"],
)
def test_every_preset_is_valid(preset, tmp_path):
    """Every preset names registered encodings and tasks, its models trace at the longest
    evaluation length (``validate``), and each of its tasks traces a training step (shapes
    only, nothing trained)."""
    import importlib

    import jax

    from experiments.length_extrapolation import cell_spec, study_cells, validate
    from posenc_jax.train.loop import compiled_init, compiled_step, run_keys

    config = importlib.import_module(f"experiments.configs.{preset}").get_config()
    config.lm.data_dir = str(tmp_path)  # the language-model presets prepare their corpus
    validate(config)
    keys = run_keys(list(config.seeds))
    cells = study_cells(config)
    first = {}  # each task's first encoding among the cells the study runs
    for task, encoding in cells:
        first.setdefault(task, encoding)
    assert set(first) == set(config.tasks)
    for task, encoding in first.items():
        spec = cell_spec(config, task, encoding)[0]
        state = jax.eval_shape(compiled_init(spec), keys)
        stepped, _ = jax.eval_shape(compiled_step(spec), state, keys)
        assert jax.tree.structure(stepped) == jax.tree.structure(state), task
    if preset == "quick":
        # What the quick table must show: every hook's family and both naive baselines.
        kept = {"nope", "sinusoidal", "learned", "rope", "alibi", "t5", "fire", "randomized_rope"}
        assert kept | {"normalized", "integer"} <= set(config.encodings)
        assert {"copy", "reverse"} <= set(config.tasks) and len(config.seeds) >= 2
        assert config.min_train_length == 1
    if preset.startswith("lm"):
        # Press et al. 2022: trained at N, evaluated at N .. 8N and beyond, offline.
        assert config.tasks == ("char_lm",) and config.lm.corpus == "python_docs"
        assert config.min_train_length == config.train_length
        assert {1, 2, 4, 8} <= set(config.eval_multipliers) and len(config.seeds) >= 2
        assert {"sinusoidal", "rope", "t5", "alibi"} <= set(config.encodings)
    if preset == "full":
        assert {"fox", "cable", "stick_breaking"} <= set(config.encodings)
        assert {"pope", "fope", "abacus", "position_coupling"} <= set(config.encodings)
        # Encodings that read the task's positions run on the tasks that assign them.
        assert ("addition", "abacus") in cells and ("copy", "abacus") not in cells


def test_char_lm_is_evaluated_on_held_out_text_only():
    """Without held-out text the study would score windows of the training corpus."""
    from experiments.configs.smoke import get_config
    from experiments.length_extrapolation import validate
    from posenc_jax.data.char_lm import CharVocabulary

    text = "the quick brown fox jumps over the lazy dog. " * 8
    vocabulary = CharVocabulary.from_text(text)
    config = get_config()
    config.tasks = ("char_lm",)
    config.task_kwargs = {"char_lm": {"corpus": text, "vocabulary": vocabulary}}
    with pytest.raises(ValueError, match="char_lm has no held_out_corpus"):
        validate(config)
    config.task_kwargs["char_lm"]["held_out_corpus"] = text[:20]  # 8N = 24 does not fit
    with pytest.raises(ValueError, match="need a corpus of at least 25; this one has 20"):
        validate(config)
    config.task_kwargs["char_lm"]["held_out_corpus"] = text[:40]
    validate(config)


def test_a_study_grows_by_seeds_and_lengths_and_refuses_another_configuration(tmp_path):
    """A re-run with more seeds or lengths trains only the seeds that lack a row; a re-run
    with other settings is refused before training, since the old rows would be reported
    as the new configuration's."""
    first = (
        "--config.encodings=('t5',)",
        "--config.eval_multipliers=(1,2)",
        "--config.eval_every_length_to=0",
    )
    result = _run_study(tmp_path, *first, "--config.checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path)
    assert {(r["seed"], r["eval_length"]) for r in rows} == {(0, 3), (0, 6)}

    grown = (
        "--config.encodings=('t5',)",
        "--config.eval_multipliers=(1,2,4)",
        "--config.eval_every_length_to=0",
    )
    result = _run_study(tmp_path, *grown, "--config.seeds=(0,1)")
    assert result.returncode == 0, result.stderr[-3000:]
    grown_rows = _rows(tmp_path)
    keys = [(r["seed"], r["eval_length"]) for r in grown_rows]
    assert sorted(keys) == [(s, n) for s in (0, 1) for n in (3, 6, 12)]  # each once
    assert grown_rows[:2] == rows  # the finished rows are kept as they were
    assert os.path.isdir(tmp_path / "cells" / "copy" / "t5" / "seeds-0-1")

    # A configuration with fewer seeds and lengths reports only its own cells.
    fewer = ("--config.encodings=('t5',)", "--config.eval_multipliers=(1,2)")
    result = _run_study(tmp_path, *fewer, "--config.eval_every_length_to=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _rows(tmp_path) == grown_rows  # nothing trained, nothing written
    table = open(os.path.join(tmp_path, "table.md")).read()
    assert "| t5 | 1 |" in table and "4N" not in table
    assert "4 row(s) of this work dir belong to" in table  # seed 1, and 4N of seed 0

    changed = _run_study(tmp_path, *grown, "--config.optimizer.learning_rate=0.5")
    assert changed.returncode != 0
    assert "made under other study settings" in changed.stderr
    # Also when the changed settings would only reach a new cell.
    new_cell = (
        "--config.encodings=('t5','nope')",
        "--config.eval_every_length_to=0",
        "--config.optimizer.learning_rate=0.5",
    )
    changed = _run_study(tmp_path, *new_cell)
    assert changed.returncode != 0 and "made under other study settings" in changed.stderr
    # A cell's own arguments: T5 with other buckets.
    other_t5 = ('--config.encoding_kwargs={"t5": {"num_buckets": 16}}',)
    changed = _run_study(tmp_path, *grown, *other_t5)
    assert changed.returncode != 0 and "another configuration of that cell" in changed.stderr
    assert _rows(tmp_path) == grown_rows

    # The figures read the study's trained T5 table from its checkpoints.
    from experiments.figures import _study_bias_params

    params, num_heads, causal, label = _study_bias_params(str(tmp_path), "t5")
    assert params["relative_attention_bias"].shape == (num_heads, 32) and causal
    assert "copy, 4 steps" in label


def test_long_seed_groups_get_short_directory_names(tmp_path):
    from experiments.length_extrapolation import cell_dir

    assert cell_dir("w", "copy", "t5", [0, 1]).endswith("seeds-0-1")
    long = os.path.basename(cell_dir("w", "copy", "t5", range(100)))
    assert long.startswith("seeds-0-to-99-n100-") and len(long) < 50
    assert long != os.path.basename(cell_dir("w", "copy", "t5", [*range(99), 100]))


def test_the_spread_over_seeds_is_the_sample_standard_deviation():
    from experiments.results import summarize

    accuracies = [0.586, 0.039, 0.25]
    rows = [
        {"task": "copy", "encoding": "t5", "eval_length": 8, "token_accuracy": a}
        for a in accuracies
    ]
    mean, std, n = summarize(rows, "token_accuracy")["copy"]["t5"][8]
    assert n == 3 and abs(mean - sum(accuracies) / 3) < 1e-12
    assert abs(std - (sum((a - mean) ** 2 for a in accuracies) / 2) ** 0.5) < 1e-12
    assert summarize(rows[:1], "token_accuracy")["copy"]["t5"][8] == (0.586, 0.0, 1)


def test_unusable_checkpoints_stop_a_study_unless_it_may_start_the_cell_fresh(tmp_path):
    only = (
        "--config.encodings=('nope',)",
        "--config.eval_multipliers=(1,)",
        "--config.eval_every_length_to=0",
    )
    result = _run_study(tmp_path, *only, "--config.checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path)
    os.remove(tmp_path / "results.jsonl")  # the cell is pending again
    checkpoints = tmp_path / "cells" / "copy" / "nope" / "seeds-0" / "checkpoints"
    for step in os.listdir(checkpoints):  # every checkpoint loses its state
        shutil.rmtree(checkpoints / step / "state")

    stopped = _run_study(tmp_path, *only, "--config.checkpoint_every=2")
    assert stopped.returncode != 0
    assert "no usable checkpoint" in stopped.stderr

    fresh = ("--config.checkpoint_every=2", "--config.start_fresh_if_unusable=True")
    result = _run_study(tmp_path, *only, *fresh)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(tmp_path / "cells" / "copy" / "nope" / "seeds-0" / "unusable_checkpoints")
    retrained = _rows(tmp_path)
    assert [r["token_accuracy"] for r in retrained] == [r["token_accuracy"] for r in rows]


def test_the_progress_bar_counts_a_cells_time_outside_its_steps():
    """A cell of 100 steps that ran them in 10 s and took 30 s in all spent 20 s, 200 of its
    steps, compiling and evaluating; the bar adds that work to the cells still to come."""
    from ml_collections import ConfigDict

    from experiments.length_extrapolation import overhead_in_steps

    cfg = ConfigDict({"optimizer": {"total_steps": 100}})
    assert overhead_in_steps([{"steps_seconds": 10.0}], 30.0, cfg) == 200.0
    assert overhead_in_steps([{"steps_seconds": 0.0}], 30.0, cfg) == 0.0  # nothing trained
    assert overhead_in_steps([], 5.0, cfg) == 0.0
