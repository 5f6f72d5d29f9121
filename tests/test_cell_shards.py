"""A study's cells split over independent jobs (``cell_shard``) and merged back."""

import json
import os
import shutil

import pytest

from experiments.cell_shards import (
    CellShard,
    ConflictingRowsError,
    DuplicateRowsError,
    parse_cell_shard,
)
from experiments.configs import smoke
from experiments.length_extrapolation import run_study
from experiments.merge_shards import merge_shards
from tests.specs import ROW_TIMES


def small_study(cell_shard: str = ""):
    """The smoke preset (two cells: copy with nope and with sinusoidal), evaluated at N."""
    cfg = smoke.get_config()
    cfg.eval_multipliers = (1,)
    cfg.eval_every_length_to = 0
    cfg.cell_shard = cell_shard
    return cfg


def read(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def without_timing(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in ROW_TIMES} for r in rows),
        key=lambda r: (r["encoding"], r["task"], r["seed"], r["eval_length"]),
    )


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two shard jobs in one work dir, and the same study unsharded in another."""
    sharded = tmp_path_factory.mktemp("sharded")
    for index in (0, 1):
        run_study(small_study(f"{index}/2"), str(sharded), progress=False)
    whole = tmp_path_factory.mktemp("whole")
    run_study(small_study(), str(whole), progress=False)
    return sharded, whole


def copy_of(directory, tmp_path):
    target = tmp_path / "work"
    shutil.copytree(directory, target)
    return target


def test_each_shard_runs_its_own_cells_and_the_merge_equals_the_whole_study(studies, tmp_path):
    sharded, whole = studies
    first = read(sharded / "results-shard-0-of-2.jsonl")
    second = read(sharded / "results-shard-1-of-2.jsonl")
    assert {r["encoding"] for r in first} == {"nope"}  # cell 0 of (nope, sinusoidal)
    assert {r["encoding"] for r in second} == {"sinusoidal"}
    # The shards write no shared file: the table is the merge's.
    assert not os.path.exists(sharded / "results.jsonl")
    assert not os.path.exists(sharded / "table.md")

    work = copy_of(sharded, tmp_path)
    table = merge_shards(small_study(), str(work))
    assert without_timing(read(work / "results.jsonl")) == without_timing(
        read(whole / "results.jsonl")
    )
    assert table == (whole / "table.md").read_text() == (work / "table.md").read_text()
    assert os.path.exists(work / "plots" / "copy_token_accuracy.png")

    # Merging again changes nothing; the merged work dir is a finished study.
    merged = (work / "results.jsonl").read_bytes()
    merge_shards(small_study(), str(work))
    assert (work / "results.jsonl").read_bytes() == merged
    run_study(small_study(), str(work), progress=False)
    assert (work / "results.jsonl").read_bytes() == merged


def test_the_merge_refuses_a_row_in_two_shards(studies, tmp_path):
    work = copy_of(studies[0], tmp_path)
    with open(work / "results-shard-0-of-2.jsonl") as f:
        row = f.readline()
    with open(work / "results-shard-1-of-2.jsonl", "a") as f:
        f.write(row)
    with pytest.raises(
        DuplicateRowsError, match="results-shard-0-of-2.jsonl and in results-shard-1"
    ):
        merge_shards(small_study(), str(work))
    assert not os.path.exists(work / "results.jsonl")


def test_the_merge_refuses_a_row_that_differs_from_the_merged_one(studies, tmp_path):
    work = copy_of(studies[0], tmp_path)
    merge_shards(small_study(), str(work))
    merged = (work / "results.jsonl").read_bytes()
    rows = read(work / "results-shard-1-of-2.jsonl")
    rows[0]["token_accuracy"] += 0.25
    with open(work / "results-shard-1-of-2.jsonl", "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    with pytest.raises(ConflictingRowsError, match=r"differs .* in \['token_accuracy'\]"):
        merge_shards(small_study(), str(work))
    assert (work / "results.jsonl").read_bytes() == merged


def test_the_merge_refuses_a_missing_shard_and_other_settings(studies, tmp_path):
    work = copy_of(studies[0], tmp_path)
    os.remove(work / "results-shard-1-of-2.jsonl")
    with pytest.raises(ValueError, match=r"no results of shard\(s\) \[1\] of 2.*cell_shard=1/2"):
        merge_shards(small_study(), str(work))
    other = small_study()
    other.optimizer.learning_rate = 0.5
    work = copy_of(studies[0], tmp_path / "other")
    with pytest.raises(ValueError, match="other study settings"):
        merge_shards(other, str(work))
    # A configuration with a cell no shard ran names the shard that owns it.
    more = small_study()
    more.encodings = ("nope", "sinusoidal", "learned")
    with pytest.raises(ValueError, match=r"copy/learned \(shard 0/2\)"):
        merge_shards(more, str(work))
    assert not os.path.exists(work / "results.jsonl")


def test_a_whole_study_refuses_a_work_dir_of_unmerged_shards(studies, tmp_path):
    work = copy_of(studies[0], tmp_path)
    with pytest.raises(ValueError, match="merge them first"):
        run_study(small_study(), str(work), progress=False)
    assert not os.path.exists(work / "results.jsonl")


def test_cell_shard_values():
    assert parse_cell_shard("") is None
    assert parse_cell_shard("2/3") == CellShard(2, 3)
    assert CellShard(1, 3).cells(list("abcdefg")) == ["b", "e"]
    assert sorted(sum((CellShard(i, 3).cells(list("abcdefg")) for i in range(3)), [])) == list(
        "abcdefg"
    )
    for bad in ("3/3", "1", "a/b", "-1/2", "1/0", "1/2/3"):
        with pytest.raises(ValueError, match=f"cell_shard={bad!r}; give i/n"):
            parse_cell_shard(bad)
