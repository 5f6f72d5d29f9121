"""Parity: is the number of ones in a binary string odd?"""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, leading, separator
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, SEPARATOR, ZERO, ONE = 0, 1, 2, 3


@register_task("parity")
@dataclasses.dataclass(frozen=True)
class Parity(Task):
    """``b_1 .. b_n SEP p`` with ``p = (b_1 + .. + b_n) mod 2``: the loss counts only ``p``.

    Tokens: 0 padding, 1 separator, 2 bit zero, 3 bit one; the answer is written as a bit
    (2 for an even number of ones, 3 for odd). The decoder reads ``b SEP`` (``n + 1``
    tokens) and only the last position is scored, so token and sequence accuracy agree.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (parity
      check, a regular task); Hahn, "Theoretical Limitations of Self-Attention in Neural
      Sequence Models", TACL 2020.
    """

    @property
    def vocab_size(self) -> int:
        return ONE + 1

    def sequence_length(self, length: int) -> int:
        return length + 1

    def answer_bit(self, bits: Array, lengths: Array | None) -> Array:
        """The answer ``[B, 1]`` (0 or 1) for ``bits [B, n]``, row b its first
        ``lengths[b]`` bits: the parity of the ones."""
        counted = jnp.where(leading(lengths, bits.shape[1]), bits, 0)
        return jnp.sum(counted, axis=1, keepdims=True) % 2

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        bits = jax.random.randint(key, (batch_size, length), 0, 2, jnp.int32)
        return decoder_batch(
            [(bits + ZERO, lengths), (separator(batch_size, SEPARATOR), None)],
            [(self.answer_bit(bits, lengths).astype(jnp.int32) + ZERO, None)],
        )
