"""The study's results: one JSON row per (encoding, task, seed, eval length), and its table.

Rows are written so that an interrupted study loses nothing finished and never writes a
row twice: a cell's rows are added by rewriting the file to a temporary name and renaming
it over the old one (atomic on POSIX), and a re-run trains only the seeds that lack a row.
Rows carry their cell's configuration digest; rows of another configuration are refused.
"""

import json
import os
from collections import defaultdict

import numpy as np

KEY_FIELDS = ("encoding", "task", "seed", "eval_length")


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


class ResultsFile:
    """``results.jsonl`` in a work dir."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "results.jsonl")
        self._rows: list[dict] | None = None  # read once; this object is the only writer

    def rows(self) -> list[dict]:
        if self._rows is None:
            self._rows = []
            if os.path.exists(self.path):
                with open(self.path) as f:
                    self._rows = [json.loads(line) for line in f if line.strip()]
        return list(self._rows)

    def missing_seeds(self, encoding: str, task: str, seeds, lengths) -> list[int]:
        """The seeds (in the given order) that lack a row at some length."""
        done = {row_key(r) for r in self.rows()}
        return [s for s in seeds if any((encoding, task, s, n) not in done for n in lengths)]

    def check_study(self, study_sha256: str) -> None:
        """Raises if any row was made under other study-wide settings (model, optimizer,
        train length, batch, evaluation examples), whatever its cell."""
        other = {r["study_sha256"] for r in self.rows() if "study_sha256" in r} - {study_sha256}
        if other:
            raise ValueError(
                f"{self.path} holds rows made under other study settings (model, optimizer, "
                f"train length, batch size or evaluation; digest {sorted(other)[0][:12]}, now "
                f"{study_sha256[:12]}). They would be reported beside this configuration's: "
                "give this study a new --workdir."
            )

    def check_config(self, encoding: str, task: str, config_sha256: str) -> None:
        """Raises if this cell's rows were made under another configuration of the cell
        (its encoding's or task's arguments, or a learned table sized to the longest
        evaluation length)."""
        other = {
            r["config_sha256"]
            for r in self.rows()
            if (r["encoding"], r["task"]) == (encoding, task) and "config_sha256" in r
        } - {config_sha256}
        if other:
            raise ValueError(
                f"{self.path} holds rows for ({encoding!r}, {task!r}) made under another "
                f"configuration of that cell (its encoding's or task's arguments, or a "
                f"learned position table sized to another longest evaluation length; digest "
                f"{sorted(other)[0][:12]}, now {config_sha256[:12]}). They would be reported "
                "as this configuration's: give this study a new --workdir."
            )

    def unchecked_rows(self) -> int:
        """Rows written before configuration digests were recorded (they cannot be checked)."""
        return sum("config_sha256" not in r for r in self.rows())

    def without_present(self, new_rows: list[dict]) -> list[dict]:
        """The rows whose key has no row yet."""
        present = {row_key(r) for r in self.rows()}
        return [r for r in new_rows if row_key(r) not in present]

    def add(self, new_rows: list[dict]) -> None:
        """Adds rows atomically; a row whose key is already present is an error."""
        rows = self.rows()
        present = {row_key(r) for r in rows}
        duplicates = [row_key(r) for r in new_rows if row_key(r) in present]
        if duplicates:
            raise ValueError(f"results already hold rows for {duplicates[:3]}; not writing twice.")
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for row in rows + new_rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._rows = rows + new_rows


def summarize(rows: list[dict], metric: str) -> dict:
    """{task: {encoding: {eval_length: (mean, std, n_seeds)}}} over seeds; std is the
    sample standard deviation (ddof = 1; 0 for one seed)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["encoding"], r["eval_length"])].append(r[metric])
    summary = defaultdict(lambda: defaultdict(dict))
    for (task, encoding, length), values in groups.items():
        values = np.asarray(values, np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[task][encoding][length] = (float(values.mean()), std, len(values))
    return summary


def markdown_table(rows: list[dict], encodings_order: list[str] | None = None) -> str:
    """Per task, a table of exact-match and per-token accuracy: mean ± std over seeds."""
    if not rows:
        return "(no results)\n"
    lines = []
    train_lengths = {r["task"]: r["train_length"] for r in rows}
    exact, token = summarize(rows, "sequence_accuracy"), summarize(rows, "token_accuracy")
    greedy = summarize(
        [r for r in rows if "greedy_sequence_accuracy" in r], "greedy_sequence_accuracy"
    )
    for task in sorted(exact):
        n = train_lengths[task]
        lengths = sorted({length for enc in exact[task].values() for length in enc})
        header = [
            f"{length // n}N ({length})" if length % n == 0 else str(length) for length in lengths
        ]
        seeds = max(v[2] for enc in exact[task].values() for v in enc.values())
        columns = "exact match ± std / per-token accuracy"
        if greedy.get(task):
            columns += " / greedy-decoding exact match"
        lines.append(
            f"### {task} (train length N = {n}; {columns}; mean over {seeds} "
            f"seed{'s' if seeds > 1 else ''})\n"
        )
        lines.append("| encoding | " + " | ".join(header) + " |")
        lines.append("|---|" + "---|" * len(lengths))
        order = [e for e in (encodings_order or []) if e in exact[task]]
        order += sorted(e for e in exact[task] if e not in order)
        for enc in order:
            cells = []
            for length in lengths:
                if length not in exact[task][enc]:
                    cells.append("—")
                    continue
                m, s, _ = exact[task][enc][length]
                t, _, _ = token[task][enc][length]
                cell = f"{m:.2f} ± {s:.2f} / {t:.2f}"
                if length in greedy.get(task, {}).get(enc, {}):
                    cell += f" / {greedy[task][enc][length][0]:.2f}"
                cells.append(cell)
            lines.append(f"| {enc} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
