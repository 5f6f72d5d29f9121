"""Teacher-forced evaluation of every seed of a run at any length.

A result is a number only when it is one: non-finite losses or accuracies raise instead of
being reported (``argmax`` of NaN logits would still "predict" a token and give a
plausible accuracy), and :func:`check_eval_lengths` finds, before any training, the
lengths a model cannot be evaluated at.
"""

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

from posenc_jax._checks import is_integer
from posenc_jax.data.task import Batch
from posenc_jax.train.metrics import ratios
from posenc_jax.train.sharding import to_host
from posenc_jax.train.step import RunSpec, eval_batch, init_state, over_seeds


@functools.lru_cache(maxsize=128)
def _compiled_eval(spec: RunSpec):
    return jax.jit(over_seeds(functools.partial(eval_batch, spec), in_axes=(0, None, None)))


def generated_batches(spec: RunSpec, length: int, *, key, num_examples: int, batch_size: int):
    """Evaluation batches drawn from the task with a fixed key: identical for every encoding."""
    if num_examples <= 0 or batch_size <= 0:
        raise ValueError(
            f"num_examples ({num_examples}) and batch_size ({batch_size}) must be positive."
        )
    for index, start in enumerate(range(0, num_examples, batch_size)):
        size = min(batch_size, num_examples - start)
        yield spec.task.sample(jax.random.fold_in(key, index), size, length)


def check_eval_lengths(spec: RunSpec, lengths: Sequence[int]) -> None:
    """Fails now, before training, on evaluation lengths the run cannot be evaluated at.

    Every length must be a positive integer no shorter than the train length (the study
    measures extrapolation from it upward). The model is then traced, without computing
    anything, at the longest length, so that every trace-time check fires: a learned table
    shorter than the longest sequence, a randomized encoding whose ``max_position`` is
    below it, and the like.

    Args:
      spec: the run.
      lengths: the task lengths it will be evaluated at.

    Raises:
      ValueError: naming the bad length, or the error of the check that fired.
    """
    if not lengths:
        raise ValueError("no evaluation length given; give at least the train length.")
    bad = [n for n in lengths if not is_integer(n)]
    if bad:
        raise ValueError(f"evaluation lengths must be integers, got {bad}.")
    short = sorted(n for n in lengths if n < spec.train_length)
    if short:
        raise ValueError(
            f"evaluation length(s) {short} are below the train length {spec.train_length}; "
            f"evaluate at lengths >= {spec.train_length} (N, 2N, 4N, ...)."
        )
    longest = int(max(lengths))
    key = jax.random.key(0)
    params = jax.eval_shape(lambda k: init_state(spec, k).params, key)
    batch = jax.eval_shape(lambda k: spec.task.sample(k, 1, longest), key)
    jax.eval_shape(functools.partial(eval_batch, spec), params, batch, key)


def evaluate(
    spec: RunSpec,
    params: Any,
    batches: Iterable[Batch],
    *,
    key,
    length: int | None = None,
) -> list[dict]:
    """Pools metric sums over ``batches`` for every seed of stacked ``params``.

    Args:
      spec: the run the parameters belong to.
      params: parameters with a leading seed axis.
      batches: evaluation batches (every example counts once).
      key: PRNG key of the positions an encoding samples (randomized encodings).
      length: the task length of the batches, named in error messages.

    Returns:
      One dict per seed with ``loss``, ``token_accuracy``, ``sequence_accuracy`` and the
      number of ``tokens`` and ``sequences`` they count.

    Raises:
      ValueError: if the batches count no target token (an accuracy of nothing is not 0).
      FloatingPointError: if a seed's loss or accuracy is NaN or Inf; the message names
        the length and the seed index. No such number is ever returned.
    """
    fn = _compiled_eval(spec)
    totals = None
    tokens_per_sequence = None
    for index, batch in enumerate(batches):
        tokens_per_sequence = batch["inputs"].shape[-1]
        sums = fn(params, batch, jax.random.fold_in(key, index))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if totals is None:
        raise ValueError("evaluation got no batches.")
    totals = {k: np.asarray(v, np.float64) for k, v in to_host(totals).items()}
    if np.any(totals["tokens"] == 0):
        raise ValueError("evaluation batches contain no counted target token.")
    pooled = {k: np.asarray(v) for k, v in ratios(totals).items()}
    num_seeds = totals["tokens"].shape[0]
    for seed_index in range(num_seeds):
        bad = {
            k: float(v[seed_index]) for k, v in pooled.items() if not math.isfinite(v[seed_index])
        }
        if bad:
            where = (
                f"at length {length}"
                if length is not None
                else f"on sequences of {tokens_per_sequence} tokens"
            )
            raise FloatingPointError(
                f"evaluation {where} gave {bad} for seed index {seed_index}: the model's "
                "outputs are not finite there, so no accuracy is reported. Check the "
                "parameters (NaN from training?) and whether the encoding overflows at this "
                "length."
            )
    return [
        {
            **{k: float(pooled[k][s]) for k in pooled},
            "tokens": int(totals["tokens"][s]),
            "sequences": int(totals["sequences"][s]),
        }
        for s in range(num_seeds)
    ]
