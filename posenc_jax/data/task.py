"""The task interface: a task is a pure function of (PRNG key, batch size, length).

A batch is a dict of int32 arrays with one layout for every task:

* ``inputs [B, T]``: the model's input tokens (decoder inputs for "encoder_decoder").
* ``targets [B, T]``: the token each position should predict.
* ``weights [B, T]``: 1.0 where a target counts for loss and accuracy, 0.0 elsewhere.
* ``source [B, S]``: encoder inputs, only for tasks whose architecture is "encoder_decoder".

``length`` is the task's own length axis (symbols to copy, blocks to search, ...); the
token sequence length follows from it through ``sequence_length``. Token 0 is padding.
"""

import dataclasses
from collections.abc import Callable

from posenc_jax._checks import is_integer
from posenc_jax.typing import Array

Batch = dict[str, Array]

_TASKS: dict[str, Callable[..., "Task"]] = {}


@dataclasses.dataclass(frozen=True)
class Task:
    """Base of every task.

    Attributes:
      architecture: the Transformer shape the task is posed for ("decoder", "encoder",
        "encoder_decoder").
    """

    architecture = "decoder"

    @property
    def name(self) -> str:
        return type(self).registry_name

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def sequence_length(self, length: int) -> int:
        """Token length T of ``inputs`` for a task length ``length``."""
        raise NotImplementedError

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        """A batch of ``batch_size`` examples of task length ``length``, a pure function of key."""
        raise NotImplementedError

    def __post_init__(self):
        """Every field annotated ``int`` holds an integer: a size of 8.5 or 2.5 would
        otherwise build a wrong vocabulary or fail deep inside JAX."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (int, "int") and not is_integer(value):
                raise ValueError(f"{self.name} {field.name} must be an integer, got {value!r}.")

    def held_out(self) -> "Task":
        """The task evaluation examples are drawn from: the task itself for generated tasks
        (every example is a fresh draw, unseen in training up to chance), the held-out text
        for a task over a fixed corpus."""
        return self

    def check_size(self, batch_size: int, length: int) -> None:
        """Rejects non-positive batch sizes and lengths with a clear error."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if not is_integer(length):
            raise ValueError(f"task {self.name!r} length must be an integer, got {length!r}.")
        if length <= 0:
            raise ValueError(f"task {self.name!r} length must be positive, got {length}.")


def register_task(name: str):
    """Class decorator registering a task under ``name``."""

    def decorate(cls):
        _TASKS[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def task_names() -> list[str]:
    """Every registered task name, sorted."""
    return sorted(_TASKS)


def get_task(name: str, **kwargs) -> Task:
    """Builds the task registered under ``name``; ValueError listing valid names otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}.")
    return _TASKS[name](**kwargs)
