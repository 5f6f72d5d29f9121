"""The study as a multi-host job: two processes on 127.0.0.1, 2 CPU devices each, gloo
collectives, joined through a coordinator on a free port. Every process is bounded by a
timeout and ended by its id at the end of its test."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.specs import ROW_TIMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The smoke study cut to one cell and two evaluation lengths, with four seeds, one to a
#: device (each process of a job of two holds two seeds' parameters, so every host read of
#: them gathers from both processes), checkpointed every 2 of its 4 steps (checkpointing
#: is not a study setting: every run here has it). A study whose seeds do not divide over
#: the devices splits each batch instead; experiments/benchmarks/multihost.py runs that
#: across processes.
STUDY = (
    "--config=experiments/configs/smoke.py",
    "--config.encodings=('nope',)",
    "--config.seeds=(0,1,2,3)",
    "--config.eval_multipliers=(1,2)",
    "--config.eval_every_length_to=0",
    "--config.checkpoint_every=2",
)
CHECKPOINTS = os.path.join("cells", "copy", "nope", "seeds-0-1-2-3", "checkpoints")
LAUNCH_TIMEOUT = 420

#: Runs the study CLI; test hooks from the environment: HOLD_AFTER_STEP=k makes this
#: process write HOLD_MARKER and wait (to be killed) once its checkpoint of step k is
#: saved; FAIL_AFTER_VALIDATION raises in this process alone; every restore prints the
#: step it resumed from.
DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from absl import app
    from experiments import length_extrapolation as study
    from posenc_jax.train import checkpoint, sharding

    save, restore, validate = (
        checkpoint.Checkpointer.save, checkpoint.Checkpointer.restore, study.validate
    )

    def save_then_hold(self, step, state):
        save(self, step, state)
        if step == int(os.environ.get("HOLD_AFTER_STEP", -1)):
            self.wait()
            open(os.environ["HOLD_MARKER"], "w").close()
            time.sleep(600)

    def restore_and_say(self, template, **kwargs):
        restored = restore(self, template, **kwargs)
        if restored is not None:
            step = int(np.max(sharding.to_host(restored.step)))
            print(f"RESTORED_STEP {step}", flush=True)
        return restored

    def validate_then_fail(cfg):
        validate(cfg)
        if os.environ.get("FAIL_AFTER_VALIDATION"):
            raise RuntimeError("injected failure after validation")

    checkpoint.Checkpointer.save = save_then_hold
    checkpoint.Checkpointer.restore = restore_and_say
    study.validate = validate_then_fail
    sys.argv = ["length_extrapolation", *sys.argv[1:]]
    app.run(study.main, flags_parser=study._parse_flags)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """The processes of one launch of the study, their logs and exit codes."""

    def __init__(self, logs_dir: str, name: str):
        self.logs_dir, self.name = logs_dir, name
        self.processes: list[subprocess.Popen] = []
        self.files = []

    def log(self, index: int) -> str:
        path = os.path.join(self.logs_dir, f"{self.name}.{index}.log")
        with open(path, errors="replace") as f:
            return f.read()

    def wait(self, index: int, timeout: float) -> int:
        return self.processes[index].wait(timeout=timeout)

    def wait_all(self, timeout: float = LAUNCH_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.processes]


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory) -> str:
    """One JAX compilation cache for every process of this module: a launch compiles only
    what no launch before it has compiled (the same programs give the same numbers)."""
    return str(tmp_path_factory.mktemp("compilation_cache"))


@contextlib.contextmanager
def launched(directory, name, *, processes, devices, cache, heartbeat_timeout=100, env=None):
    """Starts ``processes`` study processes of ``devices`` CPU devices each as one job, on
    the work dir ``directory/study`` (logs beside it, named after the launch); ends every
    one still running, by its id, when the block exits. ``env``: extra variables by
    process index."""
    workdir, logs_dir = os.path.join(directory, "study"), directory
    job = Job(logs_dir, name)
    port = free_port()
    try:
        for index in range(processes):
            variables = {
                **os.environ,
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                "PYTHONPATH": ROOT,
                "JAX_COMPILATION_CACHE_DIR": cache,
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
                **((env or {}).get(index, {})),
            }
            job_flags = []
            if processes > 1:
                job_flags = [
                    f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                    f"--config.distributed.num_processes={processes}",
                    f"--config.distributed.process_id={index}",
                    f"--config.distributed.heartbeat_timeout={heartbeat_timeout}",
                    "--config.distributed.initialization_timeout=120",
                ]
            log = open(os.path.join(logs_dir, f"{name}.{index}.log"), "w")  # noqa: SIM115
            job.files.append(log)
            job.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", DRIVER, *STUDY, f"--workdir={workdir}", *job_flags],
                    cwd=ROOT,
                    env=variables,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield job
    finally:
        for process in job.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
        for log in job.files:
            log.close()


def read_rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def comparable(rows: list[dict]) -> dict:
    """Rows by key, without their wall-clock times."""
    return {
        (r["encoding"], r["task"], r["seed"], r["eval_length"]): {
            k: v for k, v in r.items() if k not in ROW_TIMES
        }
        for r in rows
    }


def assert_rows_match(rows: list[dict], reference: list[dict]) -> None:
    got, expected = comparable(rows), comparable(reference)
    assert sorted(got) == sorted(expected)
    for key, row in expected.items():
        for field, value in row.items():
            if isinstance(value, float):
                assert got[key][field] == pytest.approx(value, rel=1e-6, abs=1e-6), (key, field)
            else:
                assert got[key][field] == value, (key, field)


@pytest.fixture(scope="module")
def one_process_four_devices(tmp_path_factory, compilation_cache):
    """The reference: the same study in one process of 4 CPU devices."""
    directory = tmp_path_factory.mktemp("reference")
    with launched(directory, "reference", processes=1, devices=4, cache=compilation_cache) as job:
        assert job.wait_all() == [0], job.log(0)[-3000:]
    return read_rows(directory / "study")


def test_two_processes_equal_one_process_of_four_devices(
    tmp_path, one_process_four_devices, compilation_cache
):
    workdir = tmp_path / "study"
    with launched(tmp_path, "job", processes=2, devices=2, cache=compilation_cache) as job:
        codes = job.wait_all()
        assert codes == [0, 0], job.log(0)[-3000:] + job.log(1)[-3000:]
    rows = read_rows(workdir)
    # Written once: one row per (seed, length), by process 0 alone.
    assert len(rows) == len(comparable(rows)) == len(one_process_four_devices) == 8
    assert_rows_match(rows, one_process_four_devices)
    assert "| nope |" in job.log(0) and "| nope |" not in job.log(1)  # the table: process 0
    assert os.path.exists(workdir / "table.md")


@pytest.mark.slow  # two jobs of two processes: ~70 s on a 2-core CPU
def test_a_killed_process_stops_the_other_and_a_rerun_resumes(
    tmp_path, one_process_four_devices, compilation_cache
):
    workdir = tmp_path / "study"
    checkpoints = workdir / CHECKPOINTS
    marker = tmp_path / "held"
    hold = {1: {"HOLD_AFTER_STEP": "2", "HOLD_MARKER": str(marker)}}
    job_of_two = {"processes": 2, "devices": 2, "cache": compilation_cache}
    with launched(tmp_path, "killed", **job_of_two, heartbeat_timeout=10, env=hold) as job:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not marker.exists():
            assert time.monotonic() < deadline and job.processes[1].poll() is None, job.log(1)
            time.sleep(0.2)
        os.kill(job.processes[1].pid, signal.SIGKILL)  # mid-training: step 2 of 4
        killed_at = time.monotonic()
        code = job.wait(0, timeout=120)
        stopped_after = time.monotonic() - killed_at
    survivor = job.log(0)
    assert code != 0
    assert stopped_after < 60, stopped_after  # heartbeat timeout 10 s
    # The coordination service names the process that stopped answering.
    assert re.search(r"unhealthy[^\n]*:\s*\n\s*1\s*\n", survivor), survivor[-3000:]
    assert not os.path.exists(workdir / "results.jsonl")
    assert sorted(os.listdir(checkpoints)) == ["2"]

    with launched(tmp_path, "rerun", **job_of_two) as job:
        codes = job.wait_all()
        assert codes == [0, 0], job.log(0)[-3000:] + job.log(1)[-3000:]
    assert "RESTORED_STEP 2" in job.log(0) and "RESTORED_STEP 2" in job.log(1)
    assert_rows_match(read_rows(workdir), one_process_four_devices)

    # A job of another device count resumes the same checkpoint: one process, one device.
    shutil.rmtree(checkpoints / "4")
    os.remove(workdir / "results.jsonl")
    with launched(tmp_path, "one_device", processes=1, devices=1, cache=compilation_cache) as job:
        assert job.wait_all() == [0], job.log(0)[-3000:]
    assert "RESTORED_STEP 2" in job.log(0)
    assert_rows_match(read_rows(workdir), one_process_four_devices)


@pytest.mark.parametrize("failing", [1, 0])
def test_an_error_in_one_process_stops_the_other_naming_it(tmp_path, compilation_cache, failing):
    """Process 1 fails while process 0 goes on to its next collective; process 0, which
    hosts the coordinator, fails while process 1 waits for it at a barrier."""
    other = 1 - failing
    fail = {failing: {"FAIL_AFTER_VALIDATION": "1"}}
    with launched(
        tmp_path, "failed", processes=2, devices=2, cache=compilation_cache, env=fail
    ) as job:
        codes = job.wait_all(timeout=240)
    assert codes == [1, 1], job.log(0)[-3000:] + job.log(1)[-3000:]
    assert "RuntimeError: injected failure after validation" in job.log(failing)
    assert (
        f"process {failing} of 2 failed (RuntimeError: injected failure after validation); "
        f"process {other} stops too"
    ) in job.log(other)
