"""Merges the cell shards of a study (``--config.cell_shard=i/n``) into its table.

Command (with the ``--config`` and ``--workdir`` every shard ran with, overrides included):
  python -m experiments.merge_shards --config experiments/configs/full.py --workdir runs/full

Reads every ``results-shard-i-of-n.jsonl`` of the work dir and writes ``results.jsonl``
(the shards' rows, added to any it holds), ``table.md`` and ``plots/``, as one study of
every cell would. Refused, with nothing written: the same row in two shard files, a row
that differs from one already in ``results.jsonl``, rows made under other study settings
or another configuration of their cell, and a cell of the configuration no shard has
finished (the message names the shard to run). Running it again after more shards finish
adds their rows.
"""

import os
import sys

from absl import app

from experiments.cell_shards import CellShard, merge_shard_rows, shard_files
from experiments.length_extrapolation import (
    _CONFIG,
    _WORKDIR,
    _parse_flags,
    cell_config_digest,
    eval_lengths,
    study_cells,
    study_settings_digest,
    write_table_and_plots,
)
from experiments.results import ResultsFile, row_key


def merge_shards(cfg, workdir: str) -> str:
    """Merges the work dir's shard files into results.jsonl, table.md and plots/.

    Args:
      cfg: the configuration every shard ran with.
      workdir: the work dir they share.

    Returns:
      The Markdown table.

    Raises:
      DuplicateRowsError, ConflictingRowsError: see ``cell_shards.merge_shard_rows``.
      ValueError: rows of other settings, or a cell no shard has finished.
    """
    shard_rows, _ = merge_shard_rows(workdir)
    merged = ResultsFile(workdir)
    # The study's own checks, on every file the table will read.
    for path in [*shard_files(workdir).values(), merged.path]:
        results = ResultsFile(workdir, os.path.basename(path))
        results.check_study(study_settings_digest(cfg))
        for task, encoding in study_cells(cfg):
            results.check_config(encoding, task, cell_config_digest(cfg, task, encoding))
    present = {row_key(r) for r in merged.rows() + shard_rows}
    lengths = eval_lengths(cfg)
    unfinished = [
        (task, encoding)
        for task, encoding in study_cells(cfg)
        if any((encoding, task, s, n) not in present for s in cfg.seeds for n in lengths)
    ]
    if unfinished:
        count = next(iter(shard_files(workdir))).count
        owner = {
            cell: CellShard(index, count)
            for index in range(count)
            for cell in CellShard(index, count).cells(study_cells(cfg))
        }
        listing = "; ".join(f"{t}/{e} (shard {owner[(t, e)]})" for t, e in unfinished[:10])
        raise ValueError(
            f"{len(unfinished)} cell(s) of this configuration lack rows: {listing}. Run "
            "(or finish) those shards with the same --config, then merge again; nothing was "
            "merged."
        )
    merged.add(merged.without_present(shard_rows))
    return write_table_and_plots(cfg, merged.rows(), workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(merge_shards(_CONFIG.value, _WORKDIR.value))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
