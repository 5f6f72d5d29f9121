"""The study's results: one JSON row per (encoding, task, seed, eval length), and its table.

Rows are written so that an interrupted study loses nothing finished and never writes a
row twice: a cell's rows are added by rewriting the file to a temporary name and renaming
it over the old one (atomic on POSIX), and a re-run trains only the seeds that lack a row.
A write that fails (a full disk) leaves the file as it was and stops the study with an
error naming it. Rows carry their cell's configuration digest; rows of another
configuration are refused. A line that is not a whole row (torn by a crash of another
writer) is an error naming it, never read as a row; ``python -m experiments.results
--set_aside_torn_line WORKDIR`` moves a torn last line aside.
"""

import argparse
import contextlib
import functools
import json
import os
import subprocess
from collections import defaultdict

import numpy as np

import posenc_jax

KEY_FIELDS = ("encoding", "task", "seed", "eval_length")
RESULTS_FILE = "results.jsonl"


class DamagedResultsError(ValueError):
    """A line of results.jsonl is not a whole row."""


class ResultsNotWrittenError(OSError):
    """Rows could not be written (a full disk, a read-only file system); the file is as it
    was before."""


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


class ResultsFile:
    """``results.jsonl`` in a work dir, or another results file there (``name``: a cell
    shard's, see ``experiments/cell_shards.py``)."""

    def __init__(self, workdir: str, name: str = RESULTS_FILE):
        self.path = os.path.join(workdir, name)
        self._rows: list[dict] | None = None  # read once; this object is the only writer

    def rows(self) -> list[dict]:
        """Every row of the file.

        Raises:
          DamagedResultsError: a line is not a whole row (see :func:`damaged_line`).
        """
        if self._rows is None:
            self._rows = []
            if os.path.exists(self.path):
                self._rows = _read_rows(self.path)
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

    def other_provenance(self, current: dict) -> list[str]:
        """The package versions / commits of rows written by other code than ``current``
        (see :func:`provenance`), each as ``version@commit``; rows without a record count
        as "unrecorded"."""
        seen = {(r.get("package_version", "unrecorded"), r.get("git_commit")) for r in self.rows()}
        seen.discard((current["package_version"], current["git_commit"]))
        return sorted(f"{version}@{commit or 'no commit'}" for version, commit in seen)

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
        try:
            _write_lines(self.path, [json.dumps(row, sort_keys=True) for row in rows + new_rows])
        except OSError as error:
            message = (
                f"could not write {self.path} ({error.strerror or error}): its {len(rows)} "
                f"earlier rows are unchanged and none of the {len(new_rows)} new rows was "
                "written. Free space (or fix the file system) and run the study again: it "
                "computes the missing rows and writes each once."
            )
            code = () if error.errno is None else (error.errno,)
            raise ResultsNotWrittenError(*code, message) from error
        self._rows = rows + new_rows


def _write_lines(path: str, lines: list[str]) -> None:
    """Replaces ``path`` by ``lines`` atomically: written to a temporary file, synced,
    renamed over it. On any error the file is as it was and the temporary one is gone."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            for line in lines:
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    # The rename itself reaches the disk with the directory.
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def damaged_line(line: bytes, *, ended: bool) -> str | None:
    """Why a line of results.jsonl is not a whole row, or None if it is one.

    Args:
      line: the line's bytes, without its line end.
      ended: whether a line end follows it. Every row is written with one, so a line
        without (the file's last) was cut short mid-write, even where it parses.
    """
    if not ended:
        return "it has no line end (a write cut short)"
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"not valid JSON ({error})"
    if not isinstance(row, dict) or any(field not in row for field in KEY_FIELDS):
        return f"not a results row (a JSON object with {', '.join(KEY_FIELDS)})"
    return None


def _read_rows(path: str) -> list[dict]:
    lines, last_ended = _split_lines(path)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        reason = damaged_line(line, ended=number < len(lines) or last_ended)
        if reason is not None:
            raise DamagedResultsError(_damage_message(path, number, len(lines), line, reason))
        rows.append(json.loads(line))
    return rows


def _split_lines(path: str) -> tuple[list[bytes], bool]:
    """The file's lines without their line ends, and whether the last one has its end."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if not lines[-1]:  # the file ends with a line end, or is empty
        return lines[:-1], True
    return lines, False


def _damage_message(path: str, number: int, count: int, line: bytes, reason: str) -> str:
    shown = line[:80].decode("utf-8", errors="replace") + ("..." if len(line) > 80 else "")
    message = f"{path}, line {number} of {count}: {reason}: {shown!r}. It is not read as a row. "
    if number == count:
        return message + (
            "A crash mid-write leaves a torn last line; to move it to "
            f"{path}.torn and go on, run `python -m experiments.results "
            f"--set_aside_torn_line {os.path.dirname(path)}`, then the study again (it "
            "computes any row the line held)."
        )
    return message + "Only a last line is torn by a crash mid-write: inspect the file."


def set_aside_torn_line(workdir: str) -> str | None:
    """Moves a torn last line of ``workdir``'s results.jsonl to ``results.jsonl.torn``
    (appended, byte for byte) and leaves the whole rows; returns that file's path, or None
    when the last line is whole.

    Raises:
      DamagedResultsError: a line before the last is damaged (not the trace of a crash
        mid-write; nothing is changed).
    """
    path = os.path.join(workdir, RESULTS_FILE)
    lines, last_ended = _split_lines(path)
    if not lines or damaged_line(lines[-1], ended=last_ended) is None:
        _read_rows(path)  # a damaged earlier line is still an error
        return None
    for number, line in enumerate(lines[:-1], 1):
        if line.strip() and damaged_line(line, ended=True) is not None:
            raise DamagedResultsError(
                f"{path}, line {number} of {len(lines)} is damaged too; only a torn last "
                "line is set aside: inspect the file."
            )
    torn = path + ".torn"
    with open(torn, "ab") as f:
        f.write(lines[-1] + b"\n")
        f.flush()
        os.fsync(f.fileno())
    _write_lines(path, [line.decode("utf-8") for line in lines[:-1]])
    return torn


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """Which code writes a row: the package version and, in a git checkout, its commit
    (with ``+dirty`` when tracked files differ from it); None outside a checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(posenc_jax.__file__)))

    def git(*args):
        try:
            result = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return {"package_version": posenc_jax.__version__, "git_commit": commit}


def summarize(rows: list[dict], metric: str) -> dict:
    """{task: {encoding: {eval_length: (mean, std, n_seeds)}}} over seeds of the rows that
    have ``metric`` (accuracies for the algorithmic tasks, ``bpc`` for language models);
    std is the sample standard deviation (ddof = 1; 0 for one seed)."""
    groups = defaultdict(list)
    for r in rows:
        if metric in r:
            groups[(r["task"], r["encoding"], r["eval_length"])].append(r[metric])
    summary = defaultdict(lambda: defaultdict(dict))
    for (task, encoding, length), values in groups.items():
        summary[task][encoding][length] = mean_std(values)
    return summary


def mean_std(values) -> tuple[float, float, int]:
    """``(mean, sample std (ddof 1; 0 for one value), count)``."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, len(values)


def exact_match_metric(rows: list[dict]) -> str:
    """The exact match the NoPE score reads: greedy decoding's where every row has it (the
    NoPE paper decodes greedily), teacher-forced otherwise."""
    if rows and all("greedy_sequence_accuracy" in r for r in rows):
        return "greedy_sequence_accuracy"
    return "sequence_accuracy"


def summary_scores(rows: list[dict]) -> dict:
    """The two summary scores of the references, per seed, for one (task, encoding) cell.

    * RPE score (Ruoss et al. 2023, Delétang et al. 2023): mean per-token accuracy over
      every evaluated length > N.
    * NoPE score (Kazemnejad et al. 2023): mean exact match over the evaluated lengths in
      (N, 2N] (greedy decoding where the rows have it, see :func:`exact_match_metric`).

    Every length holds the same number of examples, so a mean over lengths is the pooled
    accuracy over their examples. Returns ``{"rpe": {seed: score}, "nope": {seed:
    score}}``; a score without a length to average over is left out.
    """
    nope_rows = [r for r in rows if r["train_length"] < r["eval_length"] <= 2 * r["train_length"]]
    exact = exact_match_metric(nope_rows)
    per_seed = defaultdict(lambda: {"rpe": [], "nope": []})
    for r in rows:
        n, length = r["train_length"], r["eval_length"]
        if length > n:
            per_seed[r["seed"]]["rpe"].append(r["token_accuracy"])
        if n < length <= 2 * n:
            per_seed[r["seed"]]["nope"].append(r[exact])
    scores = {"rpe": {}, "nope": {}}
    for seed, values in per_seed.items():
        for name, seed_values in values.items():
            if seed_values:
                scores[name][seed] = float(np.mean(seed_values))
    return scores


def configured_rows(rows: list[dict], encodings, tasks, seeds, lengths) -> tuple[list, int]:
    """The rows of this configuration's cells (its encodings, tasks, seeds and evaluation
    lengths) and how many others the work dir holds."""
    wanted = (set(encodings), set(tasks), {int(s) for s in seeds}, set(lengths))
    kept = [
        r
        for r in rows
        if all(value in allowed for value, allowed in zip(row_key(r), wanted, strict=True))
    ]
    return kept, len(rows) - len(kept)


def _cell(values: tuple[float, float, int] | None) -> str:
    if values is None:
        return "—"
    mean, std, _ = values
    return f"{mean:.2f} ± {std:.2f}"


def markdown_table(
    rows: list[dict], encodings_order: list[str] | None = None, *, left_out: int = 0
) -> str:
    """Per task, the summary scores and the accuracies at every length, mean ± std over seeds.

    Every cell shows its own number of seeds. ``left_out`` (rows of the work dir outside
    this configuration) is reported in one line under the tables.
    """
    if not rows:
        return "(no results)\n" + _left_out_line(left_out)
    lines = []
    exact, token = summarize(rows, "sequence_accuracy"), summarize(rows, "token_accuracy")
    greedy = summarize(
        [r for r in rows if "greedy_sequence_accuracy" in r], "greedy_sequence_accuracy"
    )
    for task in sorted(exact):
        task_rows = [r for r in rows if r["task"] == task]
        n = task_rows[0]["train_length"]
        shortest = task_rows[0].get("min_train_length", n)
        lengths = sorted({r["eval_length"] for r in task_rows})
        header = [_length_label(length, n) for length in lengths]
        columns = "exact match ± std / per-token accuracy"
        if greedy.get(task):
            columns += " / greedy-decoding exact match"
        trained = _trained(shortest, n)
        in_range = [r for r in task_rows if n < r["eval_length"] <= 2 * n]
        greedy_nope = exact_match_metric(in_range) == "greedy_sequence_accuracy"
        nope_exact = "greedy exact match" if greedy_nope else "exact match"
        lines.append(f"### {task} (N = {n}, {trained})\n")
        lines.append(
            f"RPE score: mean per-token accuracy over lengths > N (Ruoss et al. 2023). NoPE "
            f"score: mean {nope_exact} over lengths in (N, 2N] (Kazemnejad et al. 2023). "
            f"Both mean ± sample std over seeds. Per length: {columns}.\n"
        )
        lines.append("| encoding | seeds | RPE score | NoPE score | " + " | ".join(header) + " |")
        lines.append("|---|---|---|---|" + "---|" * len(lengths))
        for enc in _ordered(exact[task], encodings_order):
            cell_rows = [r for r in task_rows if r["encoding"] == enc]
            scores = summary_scores(cell_rows)
            seeds = len({r["seed"] for r in cell_rows})
            cells = [str(seeds)]
            for name in ("rpe", "nope"):
                values = list(scores[name].values())
                cells.append(_cell(mean_std(values) if values else None))
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
    for task in sorted(summarize(rows, "bpc")):
        lines.append(lm_task_table([r for r in rows if r["task"] == task], encodings_order))
    return "\n".join(lines) + "\n" + _left_out_line(left_out)


def _length_label(length: int, n: int) -> str:
    return f"{length // n}N ({length})" if length % n == 0 else str(length)


def _trained(shortest: int, n: int) -> str:
    return f"trained on lengths {shortest}..{n}" if shortest != n else f"trained at {n}"


def _ordered(encodings, encodings_order: list[str] | None) -> list[str]:
    """The configuration's order, then any other encoding by name."""
    order = [e for e in (encodings_order or []) if e in encodings]
    return order + sorted(e for e in encodings if e not in order)


def lm_task_table(rows: list[dict], encodings_order: list[str] | None = None) -> str:
    """A language-model task's section of ``table.md``: bits per character at every
    evaluation length (mean ± sample std over seeds, with the seed count), then by window
    position at the longest length.

    Args:
      rows: the task's rows (``bpc``, ``bucket_bpc`` and ``bucket_edges`` per row;
        ``sliding_bpc`` and ``sliding_stride`` when sliding windows were scored;
        ``streaming_bpc``, ``streaming_tokens``, ``streaming_sinks`` and
        ``streaming_recent`` when windows were decoded with StreamingLLM's cache).
      encodings_order: the configuration's order of encodings.

    Returns:
      Markdown: a heading, a line saying what was measured, and two tables.
    """
    task = rows[0]["task"]
    n = rows[0]["train_length"]
    shortest = rows[0].get("min_train_length", n)
    lengths = sorted({r["eval_length"] for r in rows})
    plain, sliding = summarize(rows, "bpc")[task], summarize(rows, "sliding_bpc").get(task, {})
    strides = sorted({r["sliding_stride"] for r in rows if "sliding_stride" in r})
    streaming = summarize(rows, "streaming_bpc").get(task, {})
    caches = sorted(
        {
            (r["streaming_sinks"], r["streaming_recent"], r["streaming_tokens"])
            for r in rows
            if "streaming_bpc" in r
        }
    )
    corpora = sorted({str(r.get("corpus", "unrecorded")) for r in rows})
    scored = sorted({r["tokens"] for r in rows})
    per_length = "bits per character in non-overlapping windows"
    if sliding:
        per_length += f" / in sliding windows (stride {', '.join(map(str, strides))})"
    if streaming:
        kept = ", ".join(
            f"{sinks} sinks + {recent} recent, {count:,} characters scored"
            for sinks, recent, count in caches
        )
        per_length += (
            " / in non-overlapping windows decoded token by token with StreamingLLM's "
            f"cache ({kept})"
        )
    lines = [
        f"### {task} (N = {n}, {_trained(shortest, n)})\n",
        f"Bits per character (lower is better) on the held-out text of {', '.join(corpora)} "
        f"({', '.join(f'{c:,}' for c in scored)} characters scored, each once), read in "
        "windows of each evaluation length (Press et al. 2022). Per length: "
        f"{per_length}; mean ± sample std over seeds.\n",
        "| encoding | seeds | " + " | ".join(_length_label(x, n) for x in lengths) + " |",
        "|---|---|" + "---|" * len(lengths),
    ]
    order = _ordered(plain, encodings_order)
    for enc in order:
        cells = [str(len({r["seed"] for r in rows if r["encoding"] == enc}))]
        for length in lengths:
            if length not in plain[enc]:
                cells.append("—")
                continue
            cell = _cell(plain[enc][length])
            if length in sliding.get(enc, {}):
                cell += f" / {_cell(sliding[enc][length])}"
            if length in streaming.get(enc, {}):
                cell += f" / {_cell(streaming[enc][length])}"
            cells.append(cell)
        lines.append(f"| {enc} | " + " | ".join(cells) + " |")
    longest = lengths[-1]
    at_longest = [r for r in rows if r["eval_length"] == longest]
    edges = at_longest[0]["bucket_edges"]
    lines += [
        "",
        f"Bits per character by position in the window at {_length_label(longest, n)} "
        "(non-overlapping windows; mean over seeds): where in the window the loss grows.\n",
        "| encoding | "
        + " | ".join(f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:], strict=True))
        + " |",
        "|---|" + "---|" * (len(edges) - 1),
    ]
    for enc in order:
        per_seed = [r["bucket_bpc"] for r in at_longest if r["encoding"] == enc]
        cells = []
        for bucket in range(len(edges) - 1):
            values = [b[bucket] for b in per_seed if b[bucket] is not None]
            cells.append(f"{np.mean(values):.2f}" if values else "—")
        lines.append(f"| {enc} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines) + "\n"


def _left_out_line(left_out: int) -> str:
    if not left_out:
        return ""
    return (
        f"{left_out} row(s) of this work dir belong to encodings, tasks, seeds or lengths "
        "this configuration does not have; they are left out of the table and plots.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Repairs a study's results.jsonl.")
    parser.add_argument(
        "--set_aside_torn_line",
        metavar="WORKDIR",
        required=True,
        help="move a torn last line of WORKDIR/results.jsonl to results.jsonl.torn",
    )
    workdir = parser.parse_args(argv).set_aside_torn_line
    path = os.path.join(workdir, RESULTS_FILE)
    torn = set_aside_torn_line(workdir)
    if torn is None:
        print(f"the last line of {path} is whole; nothing to do.")
    else:
        print(f"set aside the torn last line of {path} in {torn}.")


if __name__ == "__main__":
    main()
