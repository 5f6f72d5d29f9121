"""Bucket sort: sort a string over a small alphabet after a separator."""

import dataclasses

import jax.numpy as jnp

from posenc_jax.data._layout import StringAnswerTask
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

    def answer(self, symbols: Array) -> Array:
        return jnp.sort(symbols, axis=1)
