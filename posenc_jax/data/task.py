"""The task interface: a task is a pure function of (PRNG key, batch size, length).

A batch is a dict of int32 arrays with one layout for every task:

* ``inputs [B, T]``: the model's input tokens (decoder inputs for "encoder_decoder").
* ``targets [B, T]``: the token each position should predict.
* ``weights [B, T]``: 1.0 where a target counts for loss and accuracy, 0.0 elsewhere.
* ``source [B, S]``: encoder inputs, only for tasks whose architecture is "encoder_decoder".
* ``padding_mask [B, T]`` (and ``source_padding_mask [B, S]``): bool, True on real input
  tokens, only in batches whose examples have lengths of their own (``min_length``).
* ``task_positions [B, T]``: int32, the positions the task itself assigns to the input
  tokens (addition: each digit's place in its own number), only from tasks that assign
  them; an encoding may index its embedding by them (``embed_positions``: Abacus,
  position coupling). 0 on padding.

``length`` is the task's own length axis (symbols to copy, blocks to search, ...); the
token sequence length follows from it through ``sequence_length``. Token 0 is padding.

Training on a range of lengths, as the length-generalization literature does (Delétang et
al. 2023 and Ruoss et al. 2023 draw lengths uniformly from 1..N; Kazemnejad et al. 2023
train on lengths <= N): ``sample(key, B, N, min_length=m)`` gives every example its own
length drawn uniformly from ``[m, N]`` and pads it to the width of length N, so one
compiled shape serves every length. Padding follows the example's tokens, its weights are
0, and ``padding_mask`` tells the model which tokens are real.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from posenc_jax._checks import is_integer
from posenc_jax.typing import Array

Batch = dict[str, Array]

_TASKS: dict[str, Callable[..., "Task"]] = {}

#: Folded into a batch's key to draw its examples' lengths (so the contents are drawn
#: from the key itself, as at a single length).
LENGTHS_STREAM = 0x1E9


@dataclasses.dataclass(frozen=True)
class Task:
    """Base of every task.

    Attributes:
      architecture: the Transformer shape the task is posed for ("decoder", "encoder",
        "encoder_decoder").
      gives_task_positions: its batches carry ``task_positions``.
    """

    architecture = "decoder"
    gives_task_positions = False

    @property
    def name(self) -> str:
        return type(self).registry_name

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def sequence_length(self, length: int) -> int:
        """Token length T of ``inputs`` for a task length ``length``."""
        raise NotImplementedError

    def sample(
        self, key: Array, batch_size: int, length: int, *, min_length: int | None = None
    ) -> Batch:
        """A batch of ``batch_size`` examples, a pure function of ``key``.

        Args:
          key: a PRNG key.
          batch_size: B.
          length: the task length N (every example's, or the longest with ``min_length``).
          min_length: None (every example has length N) or an integer in ``1..N``: each
            example's length is drawn uniformly from ``[min_length, N]``, the batch is
            padded to the width of length N and carries ``padding_mask``. The examples'
            contents are drawn from ``key`` as at length N (an example of length n is the
            first n symbols' example), their lengths from a key folded from it.

        Returns:
          The task's batch layout (module docstring).
        """
        self.check_size(batch_size, length)
        lengths = None
        if min_length is not None:
            self.check_min_length(min_length, length)
            lengths = jax.random.randint(
                jax.random.fold_in(key, LENGTHS_STREAM), (batch_size,), min_length, length + 1
            ).astype(jnp.int32)
        return self._sample(key, batch_size, length, lengths)

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        """The batch at task length ``length``, or of examples of ``lengths [B]`` (each
        ``<= length``) padded to its width when ``lengths`` is not None."""
        raise NotImplementedError

    def check_min_length(self, min_length, length: int) -> None:
        """``min_length`` must be an integer in ``1 .. length``."""
        if not is_integer(min_length) or not 1 <= min_length <= length:
            raise ValueError(
                f"task {self.name!r} min_length={min_length!r}; give an integer in "
                f"1..{length} (the shortest training length; {length} trains at one length)."
            )

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


def pad_batch(batch: Batch, width: int, *, source_width: int | None = None) -> Batch:
    """The batch with its token axis padded to ``width`` tokens (and its ``source`` to
    ``source_width``): padding tokens 0, weights 0 and ``padding_mask`` False there.

    Evaluation pads the batches of several lengths to one width, so one compiled program
    scores them all; the padded examples' numbers are those of the examples unpadded.

    Args:
      batch: a batch in the task layout (already padded or not).
      width: the token width to pad to, at least the batch's.
      source_width: the source width to pad to (encoder-decoder tasks); None leaves it.

    Returns:
      The padded batch, with ``padding_mask`` (and ``source_padding_mask`` when a
      ``source_width`` is given) even where nothing needed padding, so that batches
      padded to one width share one structure (one compiled program).
    """
    padded = dict(batch)
    for name, mask_name, target in (
        ("inputs", "padding_mask", width),
        ("source", "source_padding_mask", source_width),
    ):
        if name not in batch or target is None:
            continue
        size, current = batch[name].shape
        if target < current:
            raise ValueError(f"cannot pad {name} of width {current} to {target} tokens.")
        names = [mask_name]
        if name == "inputs":
            names += [key for key in ("targets", "weights", "task_positions") if key in batch]
        padded.setdefault(mask_name, jnp.ones((size, current), jnp.bool_))
        for key in [name] + names:
            values = jnp.asarray(padded[key])
            padded[key] = jnp.pad(values, ((0, 0), (0, target - current)))
    return padded
