"""Bucket sort: sort a string over a small alphabet after a separator."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import prompt_answer_batch
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, SEPARATOR = 0, 1
FIRST_SYMBOL = 2


@register_task("sort")
@dataclasses.dataclass(frozen=True)
class BucketSort(Task):
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

    def __post_init__(self):
        if self.alphabet_size < 2:
            raise ValueError(f"sort alphabet_size must be >= 2, got {self.alphabet_size}.")

    @property
    def vocab_size(self) -> int:
        return FIRST_SYMBOL + self.alphabet_size

    def sequence_length(self, length: int) -> int:
        return 2 * length

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        self.check_size(batch_size, length)
        symbols = jax.random.randint(
            key, (batch_size, length), FIRST_SYMBOL, self.vocab_size, jnp.int32
        )
        separator = jnp.full((batch_size, 1), SEPARATOR, jnp.int32)
        prompt = jnp.concatenate([symbols, separator], axis=1)
        return prompt_answer_batch(prompt, jnp.sort(symbols, axis=1))
