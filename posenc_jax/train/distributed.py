"""A multi-host job: every host runs the same program, and ``jax.distributed`` joins them.

On a TPU pod slice, several GPU hosts or a SLURM allocation, one process runs per host
(or per GPU), each the same command. :func:`join_job` connects them through a coordinator
(process 0), after which ``jax.devices()`` lists every device of the job and one mesh
(``sharding.make_mesh()``) spans them all. JAX finds the coordinator by itself on Cloud
TPU, SLURM, Open MPI and Kubernetes; elsewhere each process is given the coordinator's
address, the process count and its own id, all three or none.

Every process executes every collective (a compiled step, a barrier, a gather) in the
same order, so a process that stops leaves the others waiting inside one. Two mechanisms
bound that wait:

* a process killed outright (SIGKILL, a lost host) stops sending heartbeats to the
  coordinator; after ``heartbeat_timeout`` seconds JAX's coordination service stops every
  other process with an error that names it ("The following tasks are unhealthy ...");
* a process whose Python code raises, inside :func:`stop_job_on_error`, records its error
  with the coordinator and exits at once; every other process watches for such records
  (a thread :func:`join_job` starts, once a second) and stops with an error naming the
  failed process and its error, wherever it is waiting.

A job stopped either way resumes from its last checkpoints when it is run again.
"""

import atexit
import contextlib
import os
import sys
import threading
import time
import traceback

import jax
import numpy as np
from jax.experimental import multihost_utils

#: Where a failed process leaves its error for the others (the coordinator's key-value store),
#: and where the others say they have read it.
_FAILURE_KEYS = "posenc_jax/failed/"
_STOPPED_KEYS = "posenc_jax/stopped/"
#: How long process 0, which hosts the key-value store, waits for the others to read its error.
_GRACE_SECONDS = 10

#: jax.distributed.initialize's default, used when the job was joined without join_job.
_DEFAULT_HEARTBEAT_TIMEOUT = 100
_heartbeat_timeout = _DEFAULT_HEARTBEAT_TIMEOUT


class HalfConfiguredJobError(ValueError):
    """Some, but not all, of the coordinator address, process count and id were given."""


def cluster_environment() -> str | None:
    """The cluster JAX's auto-detection finds here (SLURM, Open MPI, Cloud TPU, ...), or None.

    The same detection ``jax.distributed.initialize()`` runs without arguments (opt-in
    methods such as mpi4py aside).
    """
    from jax._src import clusters  # noqa: PLC0415 - JAX's detection has no public name

    for environment in clusters.ClusterEnv._cluster_types:
        if not environment.opt_in_only_method and environment.is_env_present():
            return environment.__name__
    return None


def join_job(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout: int = _DEFAULT_HEARTBEAT_TIMEOUT,
    initialization_timeout: int = 300,
) -> bool:
    """Joins this process to its multi-host job, if it belongs to one.

    Call it first thing, before any JAX computation (JAX requires it). Without
    arguments the job is auto-detected (Cloud TPU, SLURM, Open MPI, Kubernetes, or
    ``JAX_COORDINATOR_ADDRESS`` with JAX's detection); without a job a single process runs
    as before. On CPU, collectives between processes go through gloo.

    Args:
      coordinator_address: ``host:port`` of process 0, the same on every process.
      num_processes: how many processes the job has.
      process_id: this process's id, in ``0 .. num_processes - 1``.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as dead
        and the coordination service stops every other process, naming it.
      initialization_timeout: seconds to wait for every process to connect.

    Returns:
      True when this process is one of several in a job.

    Raises:
      HalfConfiguredJobError: some of the three were given but not all, and no cluster
        environment supplies the rest (for example a process id without a coordinator).
      ValueError: a value out of range (the message names it).
    """
    global _heartbeat_timeout
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    _check_job_values(given, heartbeat_timeout, initialization_timeout)
    cluster = cluster_environment()
    if cluster is None and not any(v is not None for v in given.values()):
        return False
    missing = [name for name, value in given.items() if value is None]
    if cluster is None and missing:
        present = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
        raise HalfConfiguredJobError(
            f"a multi-host job was half configured: {present} given, but no "
            f"{' and no '.join(missing)}, and no cluster environment JAX detects (Cloud TPU, "
            "SLURM, Open MPI, Kubernetes) supplies them. Give every process the "
            "coordinator's address (host:port of process 0), the number of processes and "
            "its own id, or none of them to run a single process."
        )
    # CPU devices of different processes talk through gloo; other platforms ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=heartbeat_timeout,
        initialization_timeout=initialization_timeout,
    )
    _heartbeat_timeout = heartbeat_timeout
    if jax.process_count() > 1:
        _watch_for_failures()
    return jax.process_count() > 1


def _check_job_values(given: dict, heartbeat_timeout: int, initialization_timeout: int) -> None:
    address, count, index = given.values()
    if address is not None:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"coordinator_address={address!r}; give host:port of process 0 (for "
                "example 10.0.0.1:1234), the same on every process."
            )
    if count is not None and not (isinstance(count, int) and count >= 1):
        raise ValueError(f"num_processes={count!r}; give a positive integer.")
    if index is not None and not (isinstance(index, int) and index >= 0):
        raise ValueError(f"process_id={index!r}; give an integer in 0 .. num_processes - 1.")
    if count is not None and index is not None and index >= count:
        raise ValueError(f"process_id={index} but num_processes={count}; ids run 0 .. {count - 1}.")
    for name, value in (
        ("heartbeat_timeout", heartbeat_timeout),
        ("initialization_timeout", initialization_timeout),
    ):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name}={value!r}; give a positive number of seconds.")


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes the job's shared files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the job reaches the barrier of this name (no-op for
    one process). Processes must pass the same barriers in the same order; a mismatched
    name is an error."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def which_processes(condition: bool) -> list[int]:
    """The ids of the processes where ``condition`` holds (a collective: every process
    passes its own), so that all of them take the same decision."""
    if jax.process_count() == 1:
        return [0] if condition else []
    flags = multihost_utils.process_allgather(np.asarray([int(condition)], np.int32))
    return [int(i) for i in np.flatnonzero(flags.reshape(-1))]


@contextlib.contextmanager
def main_process_first(name: str):
    """Runs the block on process 0, then on the others: for files process 0 writes (an
    evaluation set, a repaired results file) that the others then read."""
    if not is_main_process():
        barrier(name)
    yield
    if is_main_process():
        barrier(name)


@contextlib.contextmanager
def stop_job_on_error():
    """Stops the whole job, not this process alone, when the block raises.

    With one process it does nothing. In a job of several, an error that escapes the
    block is printed, recorded with the coordinator and the process exits with status 1
    at once (an ordinary exit would wait for the other processes, which wait for it in a
    collective). A process whose error is a failed collective first looks for the record
    of a process that failed before it and names that one; when there is none (a process
    killed outright), it waits up to the heartbeat timeout for the coordination service to
    name the process that stopped answering.
    """
    try:
        yield
    except BaseException as error:
        if isinstance(error, SystemExit) and not error.code:
            raise
        if jax.process_count() == 1 or not jax.distributed.is_initialized():
            raise
        _stop_job(error)


def _stop_job(error: BaseException) -> None:
    """Reports ``error`` (or the failure of another process that caused it); exits."""
    me, count = jax.process_index(), jax.process_count()
    summary = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    failed = _failures_of_others()
    if not failed and isinstance(error, jax.errors.JaxRuntimeError):
        sys.stderr.write(
            f"\nprocess {me} of {count}: a collective failed ({summary[:300]}). Another process "
            f"has probably stopped; waiting up to {_heartbeat_timeout} s for the coordination "
            "service to name it.\n"
        )
        sys.stderr.flush()
        deadline = time.monotonic() + _heartbeat_timeout + 10
        while not failed and time.monotonic() < deadline:
            time.sleep(1)
            failed = _failures_of_others()
    if failed:
        _stop_after(failed, here=summary)
    traceback.print_exception(error)
    with contextlib.suppress(Exception):
        _client().key_value_set(f"{_FAILURE_KEYS}{me}", summary[:2000])
    _exit(
        f"process {me} of {count} failed ({summary[:300]}); the job's other processes "
        "stop too. Run the whole job again to resume from the last checkpoints."
    )


def _stop_after(failed: dict[int, str], here: str | None = None) -> None:
    """Stops this process because the processes in ``failed`` (id: error) failed."""
    me, count = jax.process_index(), jax.process_count()
    culprit, their_error = min(failed.items())
    with contextlib.suppress(Exception):
        _client().key_value_set(f"{_STOPPED_KEYS}{me}", str(culprit))
    _exit(
        f"process {culprit} of {count} failed ({their_error}); process {me} stops too"
        + (f" (here: {here[:300]})" if here else "")
        + f". See process {culprit}'s log for its traceback; run the whole job again to "
        "resume from the last checkpoints."
    )


def _exit(message: str) -> None:
    """Prints ``message`` and ends the process with status 1 at once: an ordinary exit would
    wait for every process at JAX's shutdown barrier, which they never reach."""
    sys.stdout.flush()
    sys.stderr.write(f"\njob stopped: {message}\n")
    sys.stderr.flush()
    if jax.process_index() == 0:
        _wait_for_others_to_stop(jax.process_count())
    os._exit(1)


def _watch_for_failures(interval: float = 1.0) -> None:
    """Starts a thread that stops this process once another records its failure (this
    one may be waiting in a collective, a barrier or a file, for a process that is gone)."""
    done = threading.Event()

    def watch():
        while not done.wait(interval):
            failed = _failures_of_others()
            if failed and not done.is_set():
                _stop_after(failed)

    # Stopped before JAX's own exit handler shuts the job's client down.
    atexit.register(done.set)
    threading.Thread(target=watch, name="posenc_jax-failure-watch", daemon=True).start()


def _wait_for_others_to_stop(count: int) -> None:
    """Process 0 hosts the key-value store: it stays up (a few seconds at most) until every
    other process has read the failure that stops the job."""
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            entries = _client().key_value_dir_get(_STOPPED_KEYS)
        except Exception:  # noqa: BLE001 - nothing left to wait for
            return
        accounted = {int(key.rsplit("/", 1)[-1]) for key, _ in entries} | set(_failures_of_others())
        if len(accounted - {0}) >= count - 1:
            return
        time.sleep(0.2)


def _failures_of_others() -> dict[int, str]:
    """The recorded errors of other processes, by process id."""
    try:
        entries = _client().key_value_dir_get(_FAILURE_KEYS)
    except Exception:  # noqa: BLE001 - the coordinator itself may be gone
        return {}
    me = jax.process_index()
    failed = {int(key.rsplit("/", 1)[-1]): value for key, value in entries}
    failed.pop(me, None)
    return failed


def _client():
    from jax._src import distributed  # noqa: PLC0415 - the client has no public name

    return distributed.global_state.client
