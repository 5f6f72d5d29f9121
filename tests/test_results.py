"""The study's summary scores and table, against hand computations."""

import pytest

from experiments.results import configured_rows, markdown_table, summary_scores


def _row(seed, length, token, exact, greedy=None, encoding="alibi", task="copy"):
    row = {
        "encoding": encoding,
        "task": task,
        "seed": seed,
        "train_length": 4,
        "min_train_length": 1,
        "eval_length": length,
        "token_accuracy": token,
        "sequence_accuracy": exact,
    }
    if greedy is not None:
        row["greedy_sequence_accuracy"] = greedy
    return row


ROWS = [
    # seed 0: lengths 4 (= N), 5, 8 (= 2N), 16 (= 4N)
    _row(0, 4, 1.0, 1.0, 0.9),
    _row(0, 5, 0.8, 0.5, 0.4),
    _row(0, 8, 0.6, 0.25, 0.2),
    _row(0, 16, 0.4, 0.0, 0.0),
    _row(1, 4, 1.0, 1.0, 1.0),
    _row(1, 5, 0.9, 0.75, 0.6),
    _row(1, 8, 0.7, 0.5, 0.4),
    _row(1, 16, 0.5, 0.0, 0.1),
]


def test_summary_scores_by_hand():
    scores = summary_scores(ROWS)
    # RPE: mean per-token accuracy over lengths > N = 4 (5, 8, 16).
    assert scores["rpe"][0] == pytest.approx((0.8 + 0.6 + 0.4) / 3)
    assert scores["rpe"][1] == pytest.approx((0.9 + 0.7 + 0.5) / 3)
    # NoPE: mean greedy exact match over (N, 2N] = (4, 8]: lengths 5 and 8.
    assert scores["nope"][0] == pytest.approx((0.4 + 0.2) / 2)
    assert scores["nope"][1] == pytest.approx((0.6 + 0.4) / 2)
    # Greedy decoding only in (N, 2N] (greedy_decoding_to = 2) still gives the greedy score.
    beyond = [{**r, "greedy_sequence_accuracy": None} if r["eval_length"] > 8 else r for r in ROWS]
    beyond = [{k: v for k, v in r.items() if v is not None} for r in beyond]
    assert summary_scores(beyond)["nope"] == summary_scores(ROWS)["nope"]
    # Without greedy decoding, the teacher-forced exact match.
    teacher_forced = [{k: v for k, v in r.items() if not k.startswith("greedy")} for r in ROWS]
    assert summary_scores(teacher_forced)["nope"][0] == pytest.approx((0.5 + 0.25) / 2)


def test_table_shows_scores_and_each_cells_own_seed_count():
    rows = ROWS + [_row(0, n, 0.5, 0.5, 0.5, encoding="rope") for n in (4, 5, 8, 16)]
    table = markdown_table(rows, ["rope", "alibi"])
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| encoding | seeds | RPE score | NoPE score | 1N (4) | 5 | 2N (8)")
    rope, alibi = lines[1], lines[2]
    assert rope.startswith("| rope | 1 | 0.50 ± 0.00 | 0.50 ± 0.00 |")
    # alibi: RPE per seed 0.6 and 0.7 -> 0.65 ± 0.0707; NoPE 0.3 and 0.5 -> 0.40 ± 0.1414.
    assert alibi.startswith("| alibi | 2 | 0.65 ± 0.07 | 0.40 ± 0.14 |")
    assert "trained on lengths 1..4" in table


def test_only_the_configurations_rows_are_reported():
    rows = ROWS + [_row(2, 4, 0.0, 0.0), _row(0, 4, 0.0, 0.0, encoding="t5")]
    kept, left_out = configured_rows(rows, ["alibi"], ["copy"], [0, 1], [4, 5, 8])
    assert left_out == 4  # seed 2, t5, and length 16 of both seeds
    assert {(r["seed"], r["eval_length"]) for r in kept} == {
        (s, n) for s in (0, 1) for n in (4, 5, 8)
    }
    assert "4 row(s) of this work dir" in markdown_table(kept, left_out=left_out)


def _lm_row(seed, length, bpc, bucket_bpc, encoding="alibi"):
    return {
        "encoding": encoding,
        "task": "char_lm",
        "seed": seed,
        "train_length": 4,
        "min_train_length": 4,
        "eval_length": length,
        "bpc": bpc,
        "tokens": 99,
        "corpus": "written.txt",
        "bucket_bpc": bucket_bpc,
        "bucket_edges": [0, length // 2, length],
    }


LM_ROWS = [
    _lm_row(0, 4, 2.0, [2.2, 1.8]),
    _lm_row(1, 4, 2.2, [2.4, 2.0]),
    _lm_row(0, 8, 2.1, [1.8, 2.4]),
    _lm_row(1, 8, 2.5, [2.0, None]),  # a bucket that scored nothing
    _lm_row(0, 4, 3.0, [3.0, 3.0], encoding="sinusoidal"),
]


def test_language_model_table_by_hand():
    """Bits per character per length, mean ± sample std over seeds; by window position at
    the longest length; beside an algorithmic task's section, which is unchanged."""
    table = markdown_table(ROWS + LM_ROWS, ["sinusoidal", "alibi"])
    assert table.startswith(markdown_table(ROWS).rstrip("\n"))
    lm = table[table.index("### char_lm") :]
    assert lm.startswith("### char_lm (N = 4, trained at 4)")
    assert "written.txt (99 characters scored, each once)" in lm
    lines = [line for line in lm.splitlines() if line.startswith("| ")]
    assert lines[0] == "| encoding | seeds | 1N (4) | 2N (8) |"
    # alibi at 4: 2.0, 2.2 -> 2.10 ± 0.1414; at 8: 2.1, 2.5 -> 2.30 ± 0.2828.
    assert lines[1] == "| sinusoidal | 1 | 3.00 ± 0.00 | — |"
    assert lines[2] == "| alibi | 2 | 2.10 ± 0.14 | 2.30 ± 0.28 |"
    assert "by position in the window at 2N (8)" in lm
    assert lines[3] == "| encoding | 0-3 | 4-7 |"
    assert lines[4] == "| sinusoidal | — | — |"  # no row at 8
    assert lines[5] == "| alibi | 1.90 | 2.40 |"  # seed 1 scored nothing in 4-7
