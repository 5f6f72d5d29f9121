"""A study's cells split over independent jobs, and their results merged back.

A sweep larger than one job (the full preset on a cluster, as SLURM array tasks, or on
several pod slices) runs as ``n`` jobs sharing one work dir: job ``i`` of ``n``
(``--config.cell_shard=i/n``, ``i`` from 0) trains the cells whose index in the
configuration's order (each task, then each encoding) is ``i`` modulo ``n``, and writes its
rows to a file of its own, ``results-shard-i-of-n.jsonl``. No two jobs write one file,
and their cells' checkpoints live in their own cell directories. The merge
(``python -m experiments.merge_shards``) reads every shard file into ``results.jsonl``,
refusing the same row in two shard files (:class:`DuplicateRowsError`) and a row that
differs from one already merged (:class:`ConflictingRowsError`).
"""

import dataclasses
import glob
import os
import re

from experiments.results import KEY_FIELDS, ResultsFile, row_key

_SHARD_FILE = re.compile(r"results-shard-(\d+)-of-(\d+)\.jsonl")


class DuplicateRowsError(ValueError):
    """Two shard files hold a row of the same (encoding, task, seed, eval length)."""


class ConflictingRowsError(ValueError):
    """A shard's row differs from the row of the same key already in results.jsonl."""


@dataclasses.dataclass(frozen=True)
class CellShard:
    """Job ``index`` of ``count`` jobs that split a study's cells between them."""

    index: int
    count: int

    @property
    def results_name(self) -> str:
        """The file this shard's rows go to, in the shared work dir."""
        return f"results-shard-{self.index}-of-{self.count}.jsonl"

    def cells(self, cells: list) -> list:
        """The cells of this shard, from all of a configuration's cells in its order."""
        return [cell for position, cell in enumerate(cells) if position % self.count == self.index]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_cell_shard(text: str) -> CellShard | None:
    """``"i/n"`` as a :class:`CellShard`; ``""`` (no sharding) as None.

    Raises:
      ValueError: anything else, naming the value and the form.
    """
    if text in ("", None):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None or not int(match[1]) < int(match[2]):
        raise ValueError(
            f"cell_shard={text!r}; give i/n with 0 <= i < n (job i of n jobs, e.g. 0/4 ... "
            "3/4), or an empty string to run every cell."
        )
    return CellShard(int(match[1]), int(match[2]))


def shard_files(workdir: str) -> dict[CellShard, str]:
    """The shard results files in ``workdir``, by shard."""
    found = {}
    for path in sorted(glob.glob(os.path.join(workdir, "results-shard-*-of-*.jsonl"))):
        match = _SHARD_FILE.fullmatch(os.path.basename(path))
        if match:
            found[CellShard(int(match[1]), int(match[2]))] = path
    return found


def merge_shard_rows(workdir: str) -> tuple[list[dict], int]:
    """Every shard file's rows, checked against each other and against ``results.jsonl``.

    Returns:
      The rows of every shard file, and how many of them ``results.jsonl`` lacks.

    Raises:
      FileNotFoundError: ``workdir`` holds no shard file.
      ValueError: shard files of different counts, or a shard without a file.
      DuplicateRowsError: a row key in two shard files (both are named).
      ConflictingRowsError: a row key whose row in results.jsonl differs from the shard's.
    """
    files = shard_files(workdir)
    if not files:
        raise FileNotFoundError(
            f"{workdir} holds no shard results (results-shard-I-of-N.jsonl); run the study "
            "with --config.cell_shard=I/N first."
        )
    counts = sorted({shard.count for shard in files})
    if len(counts) > 1:
        raise ValueError(
            f"{workdir} holds shard files of {counts} jobs ("
            + ", ".join(os.path.basename(p) for p in files.values())
            + "): a study's cells are split one way. Move the files of the other split away."
        )
    absent = sorted(set(range(counts[0])) - {shard.index for shard in files})
    if absent:
        raise ValueError(
            f"{workdir} has no results of shard(s) {absent} of {counts[0]}: run "
            + ", ".join(f"--config.cell_shard={i}/{counts[0]}" for i in absent)
            + " first."
        )
    merged: dict[tuple, tuple[dict, str]] = {}
    for _, path in sorted(files.items(), key=lambda item: item[0].index):
        for row in ResultsFile(workdir, os.path.basename(path)).rows():
            key = row_key(row)
            if key in merged:
                raise DuplicateRowsError(
                    f"the row {dict(zip(KEY_FIELDS, key, strict=True))} "
                    f"is in {os.path.basename(merged[key][1])} and in {os.path.basename(path)}: "
                    "two jobs trained the same cell. Nothing was merged; remove the rows of "
                    "one of them."
                )
            merged[key] = (row, path)
    existing = {row_key(r): r for r in ResultsFile(workdir).rows()}
    for key, (row, path) in merged.items():
        if key in existing and existing[key] != row:
            differing = sorted(
                k for k in {*row, *existing[key]} if row.get(k) != existing[key].get(k)
            )
            raise ConflictingRowsError(
                f"results.jsonl already holds a row for {key} that differs from "
                f"{os.path.basename(path)}'s in {differing}. Nothing was merged; keep one "
                "of them (move the other file out of the work dir)."
            )
    rows = [row for row, _ in merged.values()]
    return rows, sum(key not in existing for key in merged)
