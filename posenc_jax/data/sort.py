"""Bucket sort: sort a string over a small alphabet after a separator."""

import dataclasses

import jax.numpy as jnp

from posenc_jax.data._layout import StringAnswerTask, leading
from posenc_jax.data.task import register_task
from posenc_jax.typing import Array


@register_task("sort")
@dataclasses.dataclass(frozen=True)
class BucketSort(StringAnswerTask):
    """``x_1 .. x_n SEP sorted(x)``: the loss counts only the sorted half.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols, ordered by
    token id. With a small alphabet many symbols repeat, so the answer is a run of each
    symbol whose length is its count in the input (a bucket sort), which a model can only
    produce by counting over the whole prompt. The decoder reads ``x SEP sorted(x)[:-1]``
    (``2n`` tokens).

    Attributes:
      alphabet_size: number of distinct symbols (5 in Delétang et al.).

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (bucket sort,
      a context-sensitive task).
    """

    alphabet_size: int = 5

    def answer(self, symbols: Array, lengths: Array | None) -> Array:
        # Symbols past a row's length sort after every real one and are never read.
        beyond = jnp.iinfo(jnp.int32).max
        return jnp.sort(jnp.where(leading(lengths, symbols.shape[1]), symbols, beyond), axis=1)


@register_task("bucket_sort")
@dataclasses.dataclass(frozen=True)
class DeletangBucketSort(BucketSort):
    """:class:`BucketSort` under the name Delétang et al. give it, over a vocabulary of
    ``alphabet_size`` symbols (5 in the paper): the same examples as ``sort`` for the same
    key and vocabulary.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (bucket sort).
    """
