"""Fixed evaluation sets: a task's examples at one length, stored once with TFDS.

Every encoding of a study is then scored on identical examples, and a study rerun on
another machine (or after a change to sampling code elsewhere) reads the same files. A set
is ``task.sample(jax.random.key(seed), num_examples, length)``, written row by row as
array_record files by ``TaskEvalSet`` and read back by random access with
``tfds.data_source``, without TensorFlow.

Several writers of one set (independent jobs sharing a work dir) take turns through a
lock file beside it, so the set is written once and every writer reads it; a process that
must not write opens it with :func:`open_eval_set` once another has written it.
"""

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from posenc_jax._digest import content_digest
from posenc_jax.data._tfds import ArrayRecordBuilder
from posenc_jax.data.task import Batch, Task, get_task

#: The split every evaluation set is stored as.
SPLIT = "test"


@dataclasses.dataclass(eq=False)
class TaskEvalSetConfig(tfds.core.BuilderConfig):
    """Which examples a ``TaskEvalSet`` holds.

    Attributes:
      task: the task (its fields, e.g. the alphabet size, are part of the set's identity).
      length: the task length.
      seed: the seed of ``jax.random.key`` the examples are sampled with.
      num_examples: number of examples.
    """

    task: Task | None = None
    length: int = 0
    seed: int = 0
    num_examples: int = 0


class TaskEvalSet(ArrayRecordBuilder):
    """``num_examples`` examples of a task at one length, in the task's batch layout.

    Each example holds the task's arrays (``inputs``, ``targets``, ``weights``, and
    ``source`` for encoder-decoder tasks) without the batch axis, in sample order.
    Build it through ``build_eval_set``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        shapes = jax.eval_shape(
            lambda key: config.task.sample(key, 1, config.length), jax.random.key(0)
        )
        features = {
            name: tfds.features.Tensor(shape=shape.shape[1:], dtype=np.dtype(shape.dtype))
            for name, shape in shapes.items()
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fixed evaluation examples of a posenc_jax task.",
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {SPLIT: self._generate_examples()}

    def _generate_examples(self):
        config = self.builder_config
        sample = jax.jit(config.task.sample, static_argnums=(1, 2))
        batch = jax.device_get(
            sample(jax.random.key(config.seed), config.num_examples, config.length)
        )
        for index in range(config.num_examples):
            yield index, {name: values[index] for name, values in batch.items()}


def eval_set_config(
    task: Task | str, length: int, *, num_examples: int, seed: int
) -> TaskEvalSetConfig:
    """The configuration naming one evaluation set.

    The name reads ``{task}_len{length}_seed{seed}_n{num_examples}_{digest}``, the digest
    covering the task's fields, so two sets differing in anything get different
    directories.

    Args:
      task: a Task, or a registered task name (built with its defaults).
      length: the task length.
      num_examples: number of examples (> 0).
      seed: a non-negative integer seed.
    """
    task = get_task(task) if isinstance(task, str) else task
    if num_examples <= 0:
        raise ValueError(f"num_examples must be positive, got {num_examples}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    task.check_size(num_examples, length)
    return TaskEvalSetConfig(
        name=f"{task.name}_len{length}_seed{seed}_n{num_examples}_{content_digest(task)[:12]}",
        description=f"{num_examples} examples of {task!r} at length {length}, seed {seed}.",
        task=task,
        length=length,
        seed=seed,
        num_examples=num_examples,
    )


def build_eval_set(
    task: Task | str,
    length: int,
    *,
    num_examples: int,
    seed: int,
    data_dir: str | os.PathLike | None = None,
) -> Sequence[dict[str, np.ndarray]]:
    """Builds the evaluation set if it is not on disk yet and opens it for reading.

    Args:
      task: a Task, or a registered task name (built with its defaults).
      length: the task length.
      num_examples: number of examples.
      seed: the examples are ``task.sample(jax.random.key(seed), num_examples, length)``.
      data_dir: where TFDS keeps datasets (its default when None).

    Returns:
      the random-access ``tfds.data_source`` of the set: ``len()`` examples, each a dict of
      numpy arrays without the batch axis; pass it to ``eval_set_batches``.
    """
    config = eval_set_config(task, length, num_examples=num_examples, seed=seed)
    builder = TaskEvalSet(config=config, data_dir=data_dir)
    os.makedirs(builder.data_dir_root, exist_ok=True)
    with _exclusive(os.path.join(builder.data_dir_root, f".{config.name}.lock")):
        builder.download_and_prepare()
    return open_eval_set(config, data_dir)


def open_eval_set(
    config: TaskEvalSetConfig, data_dir: str | os.PathLike | None = None
) -> Sequence[dict[str, np.ndarray]]:
    """Opens an evaluation set that :func:`build_eval_set` has written, writing nothing.

    Args:
      config: the set (``eval_set_config``).
      data_dir: where TFDS keeps datasets (its default when None).

    Returns:
      the set's random-access data source, as :func:`build_eval_set` returns it.

    Raises:
      FileNotFoundError: the set is not in ``data_dir`` (the message names it).
    """
    builder = TaskEvalSet(config=config, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"the evaluation set {config.name} is not in {builder.data_dir_root}; write it "
            "with build_eval_set first."
        )
    return tfds.data_source(
        f"{TaskEvalSet.name}/{config.name}", split=SPLIT, data_dir=data_dir, download=False
    )


@contextlib.contextmanager
def _exclusive(lock_path: str):
    """Holds an exclusive ``flock`` on ``lock_path`` (waiting for it) while the block runs."""
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def eval_set_batches(source: Sequence[dict], batch_size: int) -> Iterator[Batch]:
    """Batches of an evaluation set in order, in the task layout (the last may be smaller).

    Args:
      source: a data source from ``build_eval_set`` (any sequence of example dicts).
      batch_size: examples per batch.

    Yields:
      dicts of jnp arrays with a leading batch axis, e.g. ``inputs [B, T]``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if len(source) == 0:
        raise ValueError("the evaluation set is empty.")
    for start in range(0, len(source), batch_size):
        indices = list(range(start, min(start + batch_size, len(source))))
        getitems = getattr(source, "__getitems__", None)
        examples = getitems(indices) if getitems else [source[i] for i in indices]
        yield {
            name: jnp.asarray(np.stack([example[name] for example in examples]))
            for name in examples[0]
        }
