"""Faults a study must survive with nothing lost: a full disk while results are written, a
torn last line in results.jsonl, two study processes on one work dir.

(A process killed while a checkpoint is written, or between and during cells, is in
tests/test_reliability.py.)
"""

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from experiments import results as results_module
from experiments.configs import smoke
from experiments.length_extrapolation import run_study
from experiments.results import DamagedResultsError, ResultsFile, ResultsNotWrittenError
from experiments.study_lock import LOCK_FILE, WorkDirInUseError, study_lock
from tests.specs import smoke_study_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two cells (nope, sinusoidal) of one seed, evaluated at N = 3 .. 2N = 6.
_OVERRIDES = {"eval_multipliers": (1, 2), "greedy_decoding": False}


def _config(**overrides):
    config = smoke.get_config()
    for key, value in {**_OVERRIDES, **overrides}.items():
        setattr(config, key, value)
    return config


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _keys(rows):
    return sorted((r["encoding"], r["task"], r["seed"], r["eval_length"]) for r in rows)


# --- The disk fills while results.jsonl is written -----------------------------------------


class _FullDisk:
    """A file that takes ``room`` more bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, file, room):
        self._file, self._room = file, room

    def write(self, data):
        if len(data) > self._room:
            self._file.write(data[: self._room])
            self._file.flush()  # the partial bytes reach the file, as on a real disk
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def _disk_fills_on_second_write(monkeypatch):
    """From the second time results are written, the disk has room for half a row."""
    writes = []

    def fake_open(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        if "w" not in mode or not os.path.basename(str(path)).startswith("results.jsonl"):
            return file
        writes.append(path)
        if len(writes) < 2:
            return file
        target = os.path.join(os.path.dirname(str(path)), "results.jsonl")
        return _FullDisk(file, room=os.path.getsize(target) + 200)

    monkeypatch.setattr(results_module, "open", fake_open, raising=False)


def test_a_full_disk_stops_the_study_and_loses_no_row(tmp_path, monkeypatch):
    path = str(tmp_path / "results.jsonl")
    _disk_fills_on_second_write(monkeypatch)
    with pytest.raises(ResultsNotWrittenError, match="No space left on device") as stopped:
        run_study(_config(), str(tmp_path), progress=False)
    message = str(stopped.value)
    assert path in message and "4 earlier rows are unchanged" in message
    # The first cell's rows are whole and unchanged; nothing of the second is there.
    first = [json.loads(line) for line in _lines(path)]
    assert _keys(first) == [("nope", "copy", 0, n) for n in (3, 4, 5, 6)]
    assert sorted(os.listdir(tmp_path)) == ["cells", "eval_sets", "results.jsonl", LOCK_FILE]

    monkeypatch.undo()  # space is freed
    run_study(_config(), str(tmp_path), progress=False)
    rows = [json.loads(line) for line in _lines(path)]
    expected = [(e, "copy", 0, n) for e in ("nope", "sinusoidal") for n in (3, 4, 5, 6)]
    assert _keys(rows) == expected  # every row, each once
    assert [r for r in rows if r["encoding"] == "nope"] == first


# --- A torn last line ----------------------------------------------------------------------


def _row(length, encoding="nope"):
    return {"encoding": encoding, "task": "copy", "seed": 0, "eval_length": length, "x": 1.0}


def _results_file(directory, text):
    with open(os.path.join(directory, "results.jsonl"), "w") as f:
        f.write(text)
    return ResultsFile(str(directory))


def _whole(*rows):
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        ('{"encoding": "nope", "task": "co', "it has no line end"),
        # Cut exactly before its line end: valid JSON, still a line a crash cut short.
        (json.dumps(_row(5), sort_keys=True), "it has no line end"),
        ('{"encoding": "nope", "ta\n', "not valid JSON"),
        ('["a list"]\n', "not a results row"),
    ],
    ids=["mid-row", "before-its-newline", "not-json", "not-a-row"],
)
def test_a_torn_last_line_is_named_and_never_read_as_a_row(tmp_path, tail, reason):
    results = _results_file(tmp_path, _whole(_row(3), _row(4)) + tail)
    with pytest.raises(DamagedResultsError, match=f"line 3 of 3: {reason}") as refused:
        results.rows()
    assert str(tmp_path / "results.jsonl") in str(refused.value)
    assert "python -m experiments.results --set_aside_torn_line" in str(refused.value)


def test_a_damaged_line_before_the_last_is_refused_without_a_repair(tmp_path):
    results = _results_file(tmp_path, _whole(_row(3)) + "{oops\n" + _whole(_row(4)))
    with pytest.raises(DamagedResultsError, match="line 2 of 3: not valid JSON") as refused:
        results.rows()
    assert "--set_aside_torn_line" not in str(refused.value)
    with pytest.raises(DamagedResultsError, match="Only a last line is torn"):
        results_module.set_aside_torn_line(str(tmp_path))


def test_the_study_refuses_a_torn_line_before_any_training(tmp_path):
    _results_file(tmp_path, _whole(_row(3)) + '{"encoding": "no')
    with pytest.raises(DamagedResultsError, match="line 2 of 2: it has no line end"):
        run_study(_config(), str(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "cells")


def test_setting_a_torn_line_aside_keeps_its_bytes(tmp_path):
    torn = '{"encoding": "nope", "task": "co'
    _results_file(tmp_path, _whole(_row(3), _row(4)) + torn)
    moved = results_module.set_aside_torn_line(str(tmp_path))
    assert moved == str(tmp_path / "results.jsonl.torn")
    assert _lines(moved) == [torn]
    assert ResultsFile(str(tmp_path)).rows() == [_row(3), _row(4)]
    assert results_module.set_aside_torn_line(str(tmp_path)) is None  # nothing left to do


def test_the_repair_command(tmp_path):
    _results_file(tmp_path, _whole(_row(3)) + '{"enc')
    command = [sys.executable, "-m", "experiments.results", "--set_aside_torn_line", tmp_path]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "set aside the torn last line" in done.stdout
    assert ResultsFile(str(tmp_path)).rows() == [_row(3)]


# --- Two studies on one work dir -----------------------------------------------------------


def test_a_second_study_on_a_work_dir_in_use_refuses(tmp_path):
    """The first holds the lock (a study process); the second, started while it runs,
    refuses and names the first's process id; the first finishes every row once."""
    overrides = ["--config.encodings=('nope',)", "--config.optimizer.total_steps=60"]
    overrides += [f"--config.{key}={value!r}" for key, value in _OVERRIDES.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    first = subprocess.Popen(
        smoke_study_command(tmp_path, *overrides),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / LOCK_FILE
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline, "the first study never took the lock"
        time.sleep(0.02)
    config = _config(encodings=("nope",))
    config.optimizer.total_steps = 60
    with pytest.raises(WorkDirInUseError, match=f"process {first.pid}"):
        run_study(config, str(tmp_path), progress=False)
    assert first.poll() is None  # it was refused while the first one ran
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    rows = [json.loads(line) for line in _lines(tmp_path / "results.jsonl")]
    assert _keys(rows) == [("nope", "copy", 0, n) for n in (3, 4, 5, 6)]


def test_a_lock_left_by_a_killed_study_does_not_block(tmp_path):
    """The lock is the kernel's (flock), released when its process dies however it dies;
    the file with a dead process id is no obstacle."""
    (tmp_path / LOCK_FILE).write_text("999999999\n")
    with study_lock(str(tmp_path)):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(WorkDirInUseError, match=f"process {os.getpid()}"):
            with study_lock(str(tmp_path)):
                pass
    with study_lock(str(tmp_path)):  # released
        pass
