"""The copy task: reproduce a random string after a separator."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, SEPARATOR = 0, 1


@register_task("copy")
@dataclasses.dataclass(frozen=True)
class Copy(Task):
    """``x_1 .. x_n SEP x_1 .. x_n``: the loss counts only the copied half.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols. The decoder
    reads ``x SEP x[:-1]`` and predicts ``x`` at the positions from SEP on, so a perfect
    model must attend exactly n positions back: the task isolates positional lookup.

    References:
      Graves et al., "Neural Turing Machines", 2014 (copy); Kazemnejad et al., NeurIPS 2023
      (copy as a length-generalization probe).
    """

    alphabet_size: int = 8

    def __post_init__(self):
        if self.alphabet_size < 2:
            raise ValueError(f"copy alphabet_size must be >= 2, got {self.alphabet_size}.")

    @property
    def vocab_size(self) -> int:
        return self.alphabet_size + 2

    def sequence_length(self, length: int) -> int:
        return 2 * length

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        self.check_size(batch_size, length)
        symbols = jax.random.randint(key, (batch_size, length), 2, self.vocab_size, jnp.int32)
        separator = jnp.full((batch_size, 1), SEPARATOR, jnp.int32)
        sequence = jnp.concatenate([symbols, separator, symbols], axis=1)
        weights = jnp.concatenate(
            [jnp.zeros((batch_size, length)), jnp.ones((batch_size, length))], axis=1
        )
        return {
            "inputs": sequence[:, :-1],
            "targets": sequence[:, 1:],
            "weights": weights.astype(jnp.float32),
        }
