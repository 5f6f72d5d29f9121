"""Teacher-forced evaluation of every seed of a run at any length."""

import functools
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from posenc_jax.data.task import Batch
from posenc_jax.train.metrics import ratios
from posenc_jax.train.step import RunSpec, eval_batch


@functools.lru_cache(maxsize=128)
def _compiled_eval(spec: RunSpec):
    return jax.jit(jax.vmap(functools.partial(eval_batch, spec), in_axes=(0, None, None)))


def generated_batches(spec: RunSpec, length: int, *, key, num_examples: int, batch_size: int):
    """Evaluation batches drawn from the task with a fixed key: identical for every encoding."""
    if num_examples <= 0 or batch_size <= 0:
        raise ValueError(
            f"num_examples ({num_examples}) and batch_size ({batch_size}) must be positive."
        )
    for index, start in enumerate(range(0, num_examples, batch_size)):
        size = min(batch_size, num_examples - start)
        yield spec.task.sample(jax.random.fold_in(key, index), size, length)


def evaluate(spec: RunSpec, params: Any, batches: Iterable[Batch], *, key) -> list[dict]:
    """Pools metric sums over ``batches`` for every seed of stacked ``params``.

    Returns:
      One dict per seed with ``loss``, ``token_accuracy``, ``sequence_accuracy`` and the
      number of ``tokens`` and ``sequences`` they count.

    Raises:
      ValueError: if the batches count no target token (an accuracy of nothing is not 0).
    """
    fn = _compiled_eval(spec)
    totals = None
    for index, batch in enumerate(batches):
        sums = fn(params, batch, jax.random.fold_in(key, index))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if totals is None:
        raise ValueError("evaluation got no batches.")
    totals = {k: np.asarray(v, np.float64) for k, v in totals.items()}
    if np.any(totals["tokens"] == 0):
        raise ValueError("evaluation batches contain no counted target token.")
    pooled = {k: np.asarray(v) for k, v in ratios(totals).items()}
    num_seeds = totals["tokens"].shape[0]
    return [
        {
            **{k: float(pooled[k][s]) for k in pooled},
            "tokens": int(totals["tokens"][s]),
            "sequences": int(totals["sequences"][s]),
        }
        for s in range(num_seeds)
    ]
