"""Orbax checkpoints of a run's TrainState: save every k steps, resume from the newest usable.

Orbax (0.12) raises on a truncated checkpoint, but not on every corruption: a flipped byte
inside a stored array can restore, without any error, into different numbers. So each
checkpoint carries a SHA-256 fingerprint of its state's bytes, written into the same step
directory (committed together with it) and compared after restoring. A checkpoint that
fails to restore or to match its fingerprint is reported with a warning, moved aside to
``unusable_checkpoints/`` next to the checkpoint directory (kept for inspection, and out of
the way of the step being saved again), and the next older one is tried. When none is
usable, :meth:`Checkpointer.restore` raises :class:`UnusableCheckpointError` unless the
caller asked to start fresh.

Each checkpoint also records what run it belongs to (``run``: the seeds and a digest of the
run's spec). A checkpoint of another run in the same directory is an error, not a resume:
restoring it would report one run's model under another run's seeds or settings.

Each also records the shape and dtype of every array it holds. A checkpoint whose arrays
cannot fit the run's state (written by other code, or for another model, into the same
directory) is refused with an error naming the first array that differs, before any
restore is tried and without moving anything: it is not damaged, only not this run's.

A state holding NaN or Inf is never saved, so every checkpoint on disk is finite.

In a job of several processes each process writes its own shards (Orbax's multi-host
form, in a directory every process reaches); a job with another number of devices
restores them onto its own devices. Every process takes every decision alike: a restore
that fails on one process fails on all, and process 0 alone moves checkpoints aside.
"""

import hashlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from posenc_jax.train.distributed import barrier, is_main_process, which_processes
from posenc_jax.train.sharding import to_host
from posenc_jax.train.step import TrainState


class UnusableCheckpointError(RuntimeError):
    """Checkpoints exist for a run, but none of them can be restored."""


class CheckpointOfAnotherRunError(ValueError):
    """The directory's checkpoints were saved by a run with other seeds or another spec."""


class CheckpointLayoutError(ValueError):
    """The directory's checkpoints hold arrays of other shapes or dtypes than the state."""


def state_fingerprint(state) -> str:
    """SHA-256 over every leaf's tree path, dtype, shape and bytes, in tree order (a
    collective in a job of several processes: see ``sharding.to_host``)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(to_host(state))[0]:
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def state_layout(state) -> dict[str, str]:
    """``{tree path: "shape dtype"}`` of every leaf, e.g. ``"(2, 16) float32"`` (the global
    shape: the same on every process and for any number of devices)."""
    return {
        jax.tree_util.keystr(path): f"{tuple(leaf.shape)} {np.dtype(leaf.dtype).name}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
    }


def _first_non_finite(host_state) -> str | None:
    """The tree path of the first floating-point leaf holding NaN or Inf, or None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(host_state)[0]:
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.inexact) and not np.all(np.isfinite(leaf)):
            return jax.tree_util.keystr(path)
    return None


class Checkpointer:
    """A thin layer over ``orbax.checkpoint.CheckpointManager`` for one run directory.

    Args:
      directory: where the checkpoints of this run live (created if missing).
      every: save when the step count is a multiple of this (and at the end of a run).
      max_to_keep: how many recent checkpoints are kept (at least 2, so that a damaged
        newest checkpoint leaves an older one to fall back on).
      run: what the run is, as a JSON-able dict (``train`` gives its seeds and a digest of
        its spec); saved with every checkpoint and compared on restore. None: unchecked.
    """

    def __init__(
        self,
        directory: str,
        *,
        every: int,
        max_to_keep: int = 2,
        run: dict[str, Any] | None = None,
    ):
        if every <= 0:
            raise ValueError(f"checkpoint every must be a positive number of steps, got {every}.")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1, got {max_to_keep}.")
        self.directory = os.path.abspath(directory)
        self.unusable_directory = os.path.join(
            os.path.dirname(self.directory), "unusable_checkpoints"
        )
        self.every = every
        self.run = None if run is None else json.loads(json.dumps(run))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                # A save cut short by a killed process leaves a temporary directory.
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(
        self, template: TrainState, *, start_fresh_if_unusable: bool = False
    ) -> TrainState | None:
        """The newest usable checkpoint, or None if the run has none yet.

        Args:
          template: a state with the structure, shapes and dtypes to restore into.
          start_fresh_if_unusable: when checkpoints exist but none is usable, move them
            aside and return None (the caller starts from step 0) instead of raising.

        Returns:
          The restored state, or None.

        Raises:
          UnusableCheckpointError: every checkpoint failed to restore or to match its
            fingerprint, and ``start_fresh_if_unusable`` is False. The message lists each
            step and why.
          CheckpointOfAnotherRunError: the newest usable checkpoint records another ``run``
            (nothing on disk is changed).
          CheckpointLayoutError: the newest checkpoint's arrays have other shapes or dtypes
            than ``template``'s (nothing on disk is changed).
        """
        self.check_run()
        self.check_layout(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        failures = []
        restored = None
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._restore_verified(step, abstract)
                break
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                failures.append((step, reason))
                logging.warning(
                    "checkpoint at step %d in %s is unusable (%s); trying an older one.",
                    step,
                    self.directory,
                    reason,
                )
        if failures and restored is None and not start_fresh_if_unusable:
            listing = "; ".join(f"step {s}: {r}" for s, r in failures)
            raise UnusableCheckpointError(
                f"no usable checkpoint in {self.directory} ({listing}). Nothing was changed "
                "on disk. To train this run again from step 0, pass "
                "start_fresh_if_unusable=True (LoopConfig(start_fresh_if_unusable=True)); "
                f"the unusable checkpoints are then moved to {self.unusable_directory}."
            )
        if failures and is_main_process():
            for step, _ in failures:
                self._move_aside(step)
        if failures:
            barrier(f"checkpoints moved aside: {self.directory}")
            self._manager.reload()
            logging.warning(
                "%s",
                f"resuming {self.directory} from step {int(np.max(restored.step))}"
                if restored is not None
                else f"no usable checkpoint in {self.directory}; starting from step 0 "
                "as asked (start_fresh_if_unusable=True)",
            )
        return restored

    def check_run(self) -> None:
        """Raises :class:`CheckpointOfAnotherRunError` if the newest checkpoint whose record
        can be read was saved by another ``run``; read before any state, so a run whose
        parameters have other shapes is named as another run, not as damaged files."""
        if self.run is None:
            return
        saved = self._newest_record().get("run")
        if saved is None or saved == self.run:
            return
        differing = sorted(k for k in {*self.run, *saved} if self.run.get(k) != saved.get(k))
        raise CheckpointOfAnotherRunError(
            f"the checkpoints in {self.directory} belong to another run: "
            + "; ".join(f"{k} {saved.get(k)} saved, {self.run.get(k)} now" for k in differing)
            + ". Nothing was changed on disk. Resume with the same seeds and spec, or give "
            "this run its own directory."
        )

    def check_layout(self, template: TrainState) -> None:
        """Raises :class:`CheckpointLayoutError` if the newest checkpoint whose record can be
        read holds arrays of other shapes or dtypes than ``template`` (records written
        before layouts were recorded are not checked)."""
        saved = self._newest_record().get("layout")
        if saved is None:
            return
        layout = state_layout(template)
        differing = sorted(k for k in {*saved, *layout} if saved.get(k) != layout.get(k))
        if not differing:
            return
        first = differing[0]
        job = self._newest_record().get("job", {})
        written_by = (
            f" (written by a job of {job['devices']} device(s) in {job['processes']} process(es))"
            if job
            else ""
        )
        raise CheckpointLayoutError(
            f"the checkpoints in {self.directory}{written_by} cannot be restored into this "
            f"run's state: {len(differing)} array(s) differ, first {first}: "
            f"{saved.get(first, 'absent')} saved, {layout.get(first, 'absent')} now. Nothing "
            "was changed on disk. They were saved by other code or for another model: give "
            "this run its own directory, or resume with the code and settings that saved them."
        )

    def _newest_record(self) -> dict:
        """The JSON record (fingerprint, run, layout) of the newest checkpoint whose record
        can be read, or {}."""
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                items = self._manager.restore(
                    step, args=ocp.args.Composite(fingerprint=ocp.args.JsonRestore())
                )
            except Exception:  # noqa: BLE001 - an unreadable record is judged by restore()
                continue
            return items.fingerprint or {}
        return {}

    def _restore_verified(self, step: int, abstract) -> TrainState:
        """The state at ``step``, checked against its fingerprint; a restore that fails on
        any process of the job fails on every process."""
        try:
            items = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), fingerprint=ocp.args.JsonRestore()
                ),
            )
            local_error = None
        except Exception as error:  # noqa: BLE001 - re-raised below, on every process
            local_error = error
        failed_on = which_processes(local_error is not None)
        if local_error is not None:
            raise local_error
        if failed_on:
            raise RuntimeError(f"the restore failed on process(es) {failed_on}")
        expected = (items.fingerprint or {}).get("sha256")
        actual = state_fingerprint(items.state)
        if expected != actual:
            raise ValueError(
                f"restored values do not match the fingerprint saved with them "
                f"(saved {str(expected)[:12]}, read {actual[:12]}): the files are corrupt"
            )
        return items.state

    def _move_aside(self, step: int) -> None:
        source = os.path.join(self.directory, str(step))
        if not os.path.exists(source):
            return
        target = os.path.join(self.unusable_directory, str(step))
        suffix = 1
        while os.path.exists(target):
            target = os.path.join(self.unusable_directory, f"{step}.{suffix}")
            suffix += 1
        os.makedirs(self.unusable_directory, exist_ok=True)
        shutil.move(source, target)
        logging.warning("moved the unusable checkpoint at step %d to %s.", step, target)

    def is_due(self, step: int, *, final: bool = False) -> bool:
        """Whether ``step`` should be saved: a multiple of ``every``, or the final step."""
        return (final or step % self.every == 0) and step not in self._manager.all_steps()

    def save(self, step: int, state: TrainState) -> None:
        """Saves ``state`` as ``step`` with its fingerprint (asynchronously).

        Raises:
          FloatingPointError: the state holds NaN or Inf; nothing is saved, and the
            message names the step, the leaf and the last checkpoint.
        """
        host = to_host(state)
        bad_leaf = _first_non_finite(host)
        if bad_leaf is not None:
            latest = self.latest_step()
            where = f"step {latest}" if latest is not None else "none"
            raise FloatingPointError(
                f"the training state at step {step} holds NaN or Inf (first in {bad_leaf}); it "
                f"was not saved. Last good checkpoint: {where} in {self.directory}. Lower the "
                "learning rate or check the inputs, and resume from that checkpoint."
            )
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                fingerprint=ocp.args.JsonSave(
                    {
                        "sha256": state_fingerprint(host),
                        "run": self.run,
                        "layout": state_layout(host),
                        "job": {"devices": jax.device_count(), "processes": jax.process_count()},
                    }
                ),
            ),
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
