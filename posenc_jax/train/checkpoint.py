"""Orbax checkpoints of a run's TrainState: save every k steps, resume from the newest."""

import logging
import os

import jax
import orbax.checkpoint as ocp

from posenc_jax.train.step import TrainState


class Checkpointer:
    """A thin layer over ``orbax.checkpoint.CheckpointManager`` for one run directory.

    Args:
      directory: where the checkpoints of this run live (created if missing).
      every: save when the step count is a multiple of this (and at the end of a run).
      max_to_keep: how many recent checkpoints are kept.
    """

    def __init__(self, directory: str, *, every: int, max_to_keep: int = 2):
        if every <= 0:
            raise ValueError(f"checkpoint every must be a positive number of steps, got {every}.")
        self.directory = os.path.abspath(directory)
        self.every = every
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, template: TrainState) -> TrainState | None:
        """The newest readable checkpoint, or None if there is none.

        A checkpoint that cannot be read (truncated or corrupt files) is reported with a
        warning and the next older one is tried.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                logging.warning(
                    "checkpoint at step %d in %s is unreadable (%s); trying an older one.",
                    step,
                    self.directory,
                    error,
                )
        return None

    def is_due(self, step: int, *, final: bool = False) -> bool:
        """Whether ``step`` should be saved: a multiple of ``every``, or the final step."""
        return (final or step % self.every == 0) and step not in self._manager.all_steps()

    def save(self, step: int, state: TrainState) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
