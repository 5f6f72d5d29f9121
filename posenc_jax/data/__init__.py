"""Tasks for the length-extrapolation study: pure functions of a PRNG key."""

from posenc_jax.data import (  # noqa: F401  (registers the tasks)
    associative_recall,
    binary_addition,
    block_finding,
    char_lm,
    copy,
    modular_arithmetic,
    parity,
    reverse,
    sort,
)
from posenc_jax.data.task import Batch, Task, get_task, register_task, task_names

__all__ = ["Batch", "Task", "get_task", "register_task", "task_names"]
