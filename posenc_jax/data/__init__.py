"""Tasks for the length-extrapolation study: pure functions of a PRNG key."""

from posenc_jax.data import block_finding, copy  # noqa: F401  (registers the tasks)
from posenc_jax.data.task import Batch, Task, get_task, register_task, task_names

__all__ = ["Batch", "Task", "get_task", "register_task", "task_names"]
