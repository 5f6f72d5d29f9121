"""One study per results file: a lock file holding the process id of the study writing it.

Two studies on one work dir would train the same cells twice and both write their rows.
Each results file has its lock, ``<results file>.lock`` (``results.jsonl.lock``; a cell
shard's results file its own, so shards of one sweep share a work dir), taken by the
process that writes the file (process 0 of a multi-host job). The lock is the kernel's
(``flock``), so it is released when its process
ends, however it ends: a study killed with SIGKILL leaves the file (with its old process
id) but no lock, and the next study takes it. ``flock`` locks are shared by every host of
a local file system; on NFS they depend on the server.
"""

import contextlib
import fcntl
import os

from experiments.results import RESULTS_FILE

LOCK_SUFFIX = ".lock"
LOCK_FILE = RESULTS_FILE + LOCK_SUFFIX


class WorkDirInUseError(RuntimeError):
    """Another study process holds the work dir's lock."""


@contextlib.contextmanager
def study_lock(workdir: str, results_name: str = RESULTS_FILE):
    """Holds the lock of ``workdir``'s results file ``results_name`` while the block runs.

    Args:
      workdir: the study's work dir (it must exist).
      results_name: the results file the study writes there.

    Raises:
      WorkDirInUseError: another process holds the lock; the message names its process id
        (as written in the lock file) and the file.
    """
    path = os.path.join(workdir, results_name + LOCK_SUFFIX)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkDirInUseError(
                f"another study (process {_holder(descriptor)}) is running in the work dir "
                f"{workdir!r}; it holds {path}. Wait for it to finish, or give this study "
                "another --workdir."
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _holder(descriptor: int) -> str:
    """The process id in the lock file, as written by its holder."""
    written = os.pread(descriptor, 64, 0).decode(errors="replace").strip()
    return written or "whose id is not written yet"
