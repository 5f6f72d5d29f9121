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

import jax
import pytest

from tests.specs import smoke_study_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

N = 8
LENGTHS = (N, 4 * N)
ENCODINGS = ("nope", "alibi")
SINKS, RECENT = 2, 6  # a StreamingLLM cache of N characters


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
        f"--config.lm.streaming_sinks={SINKS}",
        f"--config.lm.streaming_recent={RECENT}",
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
        # The streaming pass scores every target of the (short) held-out text once; at N
        # its cache holds a whole window, so it scores as the forward pass does.
        assert (
            row["streaming_tokens"] == row["tokens"] and row["streaming_windows"] == row["windows"]
        )
        assert (row["streaming_sinks"], row["streaming_recent"]) == (SINKS, RECENT)
        if window == N:
            assert row["streaming_bpc"] == pytest.approx(row["bpc"], rel=1e-5)
        assert 0.0 < row["streaming_bpc"] < 8.0
        # The digests and provenance that resume and "only this configuration" read.
        assert len(row["config_sha256"]) == len(row["study_sha256"]) == 64
        assert row["package_version"] and "git_commit" in row


def test_table_reports_bpc_per_length_over_seeds_and_by_position(study):
    workdir, _, _, result = study
    rows = _rows(workdir)
    table = open(os.path.join(workdir, "table.md")).read()
    assert table.strip() in result.stdout
    assert "1N (8)" in table and "4N (32)" in table and "sliding windows (stride 4)" in table
    scored = f"{rows[0]['tokens']:,}"
    assert (
        f"StreamingLLM's cache ({SINKS} sinks + {RECENT} recent, {scored} characters scored)"
        in table
    )
    assert "RPE score" not in table  # accuracies are not a language model's measure
    for encoding in ENCODINGS:
        per_length, by_position = _table_cells(table, encoding)
        assert per_length[0] == "2"  # seeds
        for cell, length in zip(per_length[1:], LENGTHS, strict=True):
            at = [r for r in rows if r["encoding"] == encoding and r["eval_length"] == length]
            plain = _mean_std([r["bpc"] for r in at])
            sliding = _mean_std([r["sliding_bpc"] for r in at])
            streaming = _mean_std([r["streaming_bpc"] for r in at])
            assert cell == f"{plain} / {sliding} / {streaming}"
        longest = [r for r in rows if r["encoding"] == encoding and r["eval_length"] == 4 * N]
        expected = [f"{statistics.mean(r['bucket_bpc'][b] for r in longest):.2f}" for b in range(4)]
        assert by_position == expected
    assert "| encoding | 0-7 | 8-15 | 16-23 | 24-31 |" in table


def test_plots_of_bpc_against_length_and_position(study):
    workdir = study[0]
    names = ("char_lm_bpc", "char_lm_sliding_bpc", "char_lm_streaming_bpc")
    for name in (*names, "char_lm_bpc_by_position"):
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
        ("streaming_recent", -1, "lm.streaming_recent=-1; give 0 (no streaming pass)"),
        ("streaming_sinks", -1, "lm.streaming_sinks=-1; give the number of first characters"),
        (
            "streaming_recent",
            5,
            "lm.streaming_sinks=4 + lm.streaming_recent=5 = 9 cached characters exceed "
            "train_length=8",
        ),
        ("streaming_characters", 1, "lm.streaming_characters=1; give the number"),
        ("streaming_characters", -5, "lm.streaming_characters=-5; give the number"),
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


def _tiny_lm_config(tmp_path, **lm):
    """lm_quick at N = 8 on a written corpus, with a tiny model and the given lm settings."""
    from experiments.configs.lm_quick import get_config

    corpus, held_out = _corpus(tmp_path)
    config = get_config()
    config.train_length = config.min_train_length = N
    config.eval_multipliers = (1, 4)
    config.lm.corpus, config.lm.data_dir = corpus, str(tmp_path / "tfds")
    config.lm.num_buckets = 4
    config.model.d_model, config.model.num_layers, config.model.mlp_dim = 16, 1, 32
    config.model.num_heads = 2
    for setting, value in lm.items():
        config.lm[setting] = value
    return config, held_out


@pytest.mark.parametrize(
    "encoding,message",
    [
        ("fox", "cell char_lm/fox cannot decode: streaming evicts the tokens"),
        ("cable", "cell char_lm/cable cannot decode: streaming evicts the tokens"),
    ],
)
def test_streaming_an_encoding_with_a_decay_term_fails_before_training(tmp_path, encoding, message):
    from experiments.length_extrapolation import validate

    config, _ = _tiny_lm_config(tmp_path, streaming_recent=4)
    config.encodings = ("rope", encoding)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(config)
    config.lm.streaming_recent = 0  # without the streaming pass the cell runs
    validate(config)


def test_too_few_streaming_characters_for_the_longest_window_fail_before_training(tmp_path):
    from experiments.length_extrapolation import validate

    config, _ = _tiny_lm_config(tmp_path, streaming_recent=4, streaming_characters=4 * N)
    with pytest.raises(ValueError, match=re.escape("lm.streaming_characters=32 is too few")):
        validate(config)
    config.lm.streaming_characters = 4 * N + 1
    validate(config)


@pytest.mark.parametrize("encoding,sinks", [("rope", 0), ("alibi", 3), ("sinusoidal", 3)])
def test_a_streaming_cache_that_holds_a_window_scores_as_the_forward_pass(
    tmp_path, encoding, sinks
):
    """At length N a cache of sinks + recent = N characters evicts nothing, and positions
    counted inside it are the positions in the window: the token-by-token pass gives the
    non-overlapping windows' bits per character (random parameters: the property holds for
    any model). Past N it evicts, and the numbers part."""
    from experiments.length_extrapolation import cell_spec
    from experiments.lm_study import lm_metrics
    from posenc_jax.train import init_state

    config, held_out = _tiny_lm_config(tmp_path, streaming_sinks=sinks, streaming_recent=N - sinks)
    spec, _ = cell_spec(config, "char_lm", encoding)
    keys = jax.random.split(jax.random.key(3), 2)
    params = jax.vmap(lambda k: init_state(spec, k).params)(keys)
    key = jax.random.key(0)
    for row in lm_metrics(config, spec, params, N, key):
        assert row["streaming_tokens"] == row["tokens"] == len(held_out) - 1
        assert row["streaming_bpc"] == pytest.approx(row["bpc"], rel=1e-5)
        for streamed, plain in zip(row["streaming_bucket_bpc"], row["bucket_bpc"], strict=True):
            assert streamed == pytest.approx(plain, rel=1e-5)
    for row in lm_metrics(config, spec, params, 4 * N, key):
        assert abs(row["streaming_bpc"] - row["bpc"]) > 1e-4


def test_the_streaming_pass_reads_the_first_streaming_characters(tmp_path):
    from experiments.length_extrapolation import cell_spec
    from experiments.lm_study import lm_metrics
    from posenc_jax.train import evaluate_lm_runs, init_state

    config, _ = _tiny_lm_config(tmp_path, streaming_recent=N - 4, streaming_characters=50)
    spec, _ = cell_spec(config, "char_lm", "rope")
    params = jax.vmap(lambda k: init_state(spec, k).params)(jax.random.split(jax.random.key(3)))
    key = jax.random.key(0)
    rows = lm_metrics(config, spec, params, N, key)
    # The forward pass over the same 50 characters (nothing is evicted at N).
    first = evaluate_lm_runs(
        spec,
        params,
        spec.task.held_out().corpus[:50],
        key=key,
        window=N,
        batch_size=32,
        num_buckets=4,
    )
    for row, plain in zip(rows, first, strict=True):
        assert row["streaming_tokens"] == 49 and row["tokens"] > 49
        assert row["streaming_windows"] == math.ceil(49 / N)
        assert row["streaming_bpc"] == pytest.approx(plain["bpc"], rel=1e-5)


def test_the_streaming_settings_change_the_cell_digest_only_when_on(tmp_path):
    """Rows with and without the streaming pass, or with another cache, never mix; rows
    without it keep the digest they had before the setting existed."""
    from experiments.length_extrapolation import cell_config_digest

    def digest(**lm):
        config, _ = _tiny_lm_config(tmp_path, **lm)
        return cell_config_digest(config, "char_lm", "rope")

    off = digest()
    assert digest(streaming_sinks=0, streaming_characters=100) == off  # off: not read
    on = digest(streaming_recent=4)
    others = {
        digest(streaming_recent=3),
        digest(streaming_recent=4, streaming_sinks=2),
        digest(streaming_recent=4, streaming_characters=100),
    }
    assert len({off, on, *others}) == 5


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
