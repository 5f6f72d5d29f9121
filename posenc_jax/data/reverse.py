"""The reverse task: write a random string backwards after a separator."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import prompt_answer_batch
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, SEPARATOR = 0, 1
FIRST_SYMBOL = 2


@register_task("reverse")
@dataclasses.dataclass(frozen=True)
class Reverse(Task):
    """``x_1 .. x_n SEP x_n .. x_1``: the loss counts only the reversed half.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols. The decoder
    reads ``x SEP reverse(x)[:-1]`` (``2n`` tokens) and predicts ``reverse(x)`` from the
    separator on. Answer token ``k`` sits ``2k - 1`` positions after its source, so unlike
    copy the lookback distance changes along the answer.

    Attributes:
      alphabet_size: number of distinct symbols (>= 2).

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (reverse
      string); Kazemnejad et al., "The Impact of Positional Encoding on Length
      Generalization in Transformers", NeurIPS 2023 (reverse).
    """

    alphabet_size: int = 8

    def __post_init__(self):
        if self.alphabet_size < 2:
            raise ValueError(f"reverse alphabet_size must be >= 2, got {self.alphabet_size}.")

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
        return prompt_answer_batch(prompt, symbols[:, ::-1])
