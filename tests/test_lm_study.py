"""The study's language-model cells end to end on a corpus the test writes: rows, table,
plots, resume, and the refusal of another configuration.

Expected values are computed here from the rows and the written text (``statistics``,
``math``), not by the study's own summaries.
"""

import json
import math
import os
import random
import re
import statistics
import subprocess

import pytest

from tests.specs import smoke_study_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

N = 8
LENGTHS = (N, 4 * N)
ENCODINGS = ("nope", "alibi")


def _corpus(tmp_path) -> tuple[str, str]:
    """A written text of ~2,000 characters and its held-out part (the last 10%)."""
    rng = random.Random(0)
    words = "the cat sat on a mat and saw one dog run past his red door while it rained".split()
    lines = []
    while sum(len(line) for line in lines) < 2000:
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + ".\n")
    text = "".join(lines)
    path = tmp_path / "written.txt"
    path.write_text(text, encoding="utf-8")
    return str(path), text[len(text) - round(0.1 * len(text)) :]


def _run(workdir, corpus, *overrides, encodings=ENCODINGS):
    command = smoke_study_command(
        workdir,
        "--config.tasks=('char_lm',)",
        f"--config.encodings={encodings!r}",
        "--config.seeds=(0,1)",
        f"--config.train_length={N}",
        f"--config.min_train_length={N}",
        "--config.eval_multipliers=(1,4)",
        "--config.eval_every_length_to=0",
        f"--config.lm.corpus={corpus}",
        f"--config.lm.data_dir={workdir / 'tfds'}",
        "--config.lm.num_buckets=4",
        "--config.lm.sliding_stride=4",
        *overrides,
    )
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _rows(workdir):
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def _table_cells(table: str, encoding: str) -> list[list[str]]:
    """The cells of every table row that starts with ``encoding``."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")][1:]
        for line in table.splitlines()
        if line.startswith(f"| {encoding} |")
    ]


def _mean_std(values) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lm_study")
    corpus, held_out = _corpus(workdir)
    result = _run(workdir, corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, corpus, held_out, result


def test_rows_score_every_held_out_character_once(study):
    workdir, corpus, held_out, _ = study
    rows = _rows(workdir)
    keys = {(r["encoding"], r["task"], r["seed"], r["eval_length"]) for r in rows}
    assert keys == {(e, "char_lm", s, n) for e in ENCODINGS for s in (0, 1) for n in LENGTHS}
    assert len(rows) == len(keys)
    for row in rows:
        # Every next-character target of the held-out text, once, in both windowings.
        assert row["tokens"] == row["sliding_tokens"] == len(held_out) - 1
        assert row["corpus"] == corpus and row["sliding_stride"] == 4
        assert row["windows"] == math.ceil((len(held_out) - 1) / row["eval_length"])
        window = row["eval_length"]
        assert row["bucket_edges"] == [b * window // 4 for b in range(5)]
        assert sum(row["bucket_tokens"]) == row["tokens"]
        pooled = sum(
            loss * count
            for loss, count in zip(row["bucket_loss"], row["bucket_tokens"], strict=True)
        )
        assert pooled / row["tokens"] == pytest.approx(row["loss"], rel=1e-6)
        assert row["bpc"] == pytest.approx(row["loss"] / math.log(2), rel=1e-12)
        assert 0.0 < row["bpc"] < 8.0 and 0.0 < row["sliding_bpc"] < 8.0
        # The digests and provenance that resume and "only this configuration" read.
        assert len(row["config_sha256"]) == len(row["study_sha256"]) == 64
        assert row["package_version"] and "git_commit" in row


def test_table_reports_bpc_per_length_over_seeds_and_by_position(study):
    workdir, _, _, result = study
    rows = _rows(workdir)
    table = open(os.path.join(workdir, "table.md")).read()
    assert table.strip() in result.stdout
    assert "1N (8)" in table and "4N (32)" in table and "sliding windows (stride 4)" in table
    assert "RPE score" not in table  # accuracies are not a language model's measure
    for encoding in ENCODINGS:
        per_length, by_position = _table_cells(table, encoding)
        assert per_length[0] == "2"  # seeds
        for cell, length in zip(per_length[1:], LENGTHS, strict=True):
            at = [r for r in rows if r["encoding"] == encoding and r["eval_length"] == length]
            plain = _mean_std([r["bpc"] for r in at])
            sliding = _mean_std([r["sliding_bpc"] for r in at])
            assert cell == f"{plain} / {sliding}"
        longest = [r for r in rows if r["encoding"] == encoding and r["eval_length"] == 4 * N]
        expected = [f"{statistics.mean(r['bucket_bpc'][b] for r in longest):.2f}" for b in range(4)]
        assert by_position == expected
    assert "| encoding | 0-7 | 8-15 | 16-23 | 24-31 |" in table


def test_plots_of_bpc_against_length_and_position(study):
    workdir = study[0]
    for name in ("char_lm_bpc", "char_lm_sliding_bpc", "char_lm_bpc_by_position"):
        assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 1000


def test_resume_subset_and_another_configuration(study):
    workdir, corpus, _, _ = study
    rows = _rows(workdir)
    again = _run(workdir, corpus)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _rows(workdir) == rows and "char_lm/nope" not in again.stderr

    # A configuration with one encoding reports only its cells.
    subset = _run(workdir, corpus, encodings=("alibi",))
    assert subset.returncode == 0, subset.stderr[-3000:]
    table = open(os.path.join(workdir, "table.md")).read()
    assert _table_cells(table, "alibi") and not _table_cells(table, "nope")
    assert "4 row(s) of this work dir belong to" in table

    # Other position buckets change what a row means: refused before training.
    changed = _run(workdir, corpus, "--config.lm.num_buckets=2")
    assert changed.returncode != 0
    assert "another configuration of that cell" in changed.stderr
    assert _rows(workdir) == rows


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("num_buckets", 9, "lm.num_buckets=9; give an integer in 1..train_length=8"),
        ("sliding_stride", 9, "lm.sliding_stride=9; give 0"),
        ("sliding_stride", -1, "lm.sliding_stride=-1; give 0"),
        ("eval_characters", 1, "lm.eval_characters=1"),
        ("corpus", "", "lm.corpus=''"),
        ("corpus", "./no_such_corpus.txt", "no_such_corpus.txt' does not exist"),
        ("validation_fraction", 1.0, "validation_fraction must be in (0, 1), got 1.0"),
    ],
)
def test_bad_lm_settings_fail_before_training(tmp_path, setting, value, message):
    from experiments.configs.lm_quick import get_config
    from experiments.length_extrapolation import validate

    config = get_config()
    config.train_length = config.min_train_length = N
    config.lm.data_dir = str(tmp_path)
    config.lm[setting] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(config)


def test_eval_characters_keeps_the_start_of_the_held_out_text(tmp_path):
    from experiments.configs.lm_quick import get_config
    from experiments.lm_study import study_task

    corpus, held_out = _corpus(tmp_path)
    config = get_config()
    config.lm.corpus, config.lm.data_dir = corpus, str(tmp_path / "tfds")
    config.lm.eval_characters = 50
    task = study_task(config, "char_lm")
    assert task.vocabulary.decode(task.held_out().corpus) == held_out[:50]
    assert task.vocabulary.decode(task.corpus) + held_out == open(corpus).read()
