"""Tasks for the length-extrapolation study: pure functions of a PRNG key."""

from posenc_jax.data import (  # noqa: F401  (registers the tasks)
    addition,
    associative_recall,
    binary_addition,
    binary_multiplication,
    block_finding,
    char_lm,
    copy,
    duplicate_string,
    even_pairs,
    modular_arithmetic,
    modular_arithmetic_brackets,
    parity,
    reverse,
    sort,
    stack_manipulation,
)
from posenc_jax.data.task import Batch, Task, get_task, register_task, task_names

__all__ = ["Batch", "Task", "get_task", "register_task", "task_names"]
