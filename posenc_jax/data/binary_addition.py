"""Binary addition: add two binary numbers written least-significant bit first."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, leading, separator
from posenc_jax.data.addition import add_little_endian
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, PLUS, EQUALS, ZERO, ONE = 0, 1, 2, 3, 4


@register_task("binary_addition")
@dataclasses.dataclass(frozen=True)
class BinaryAddition(Task):
    """``a_0 .. a_{n-1} + b_0 .. b_{n-1} = s_0 .. s_n``, bits least significant first.

    Tokens: 0 padding, 1 ``+``, 2 ``=``, 3 bit zero, 4 bit one. Both operands have exactly
    ``length`` bits drawn uniformly (so leading zeros occur), and the sum is written with
    ``length + 1`` bits, its top bit being the final carry. The loss counts the ``n + 1``
    sum bits; the decoder reads ``a + b = s[:-1]`` (``3n + 2`` tokens).

    Least-significant-first order lets a left-to-right model emit bit ``k`` once it has
    seen bits ``k`` of both operands and the carry, as in Delétang et al. Unlike their
    version, the operands have a fixed width and the sum a fixed length (no termination
    token), so every example of a given ``length`` has the same layout.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (binary
      addition, little-endian); Kazemnejad et al., NeurIPS 2023 (addition as a
      length-generalization probe).
    """

    @property
    def vocab_size(self) -> int:
        return ONE + 1

    def sequence_length(self, length: int) -> int:
        return 3 * length + 2

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        bits = jax.random.randint(key, (2, batch_size, length), 0, 2, jnp.int32)
        # Bits past a row's width are zero, so its carry lands at bit n and stops there.
        bits = jnp.where(leading(lengths, length)[None], bits, 0)
        sum_bits = add_little_endian(bits[0], bits[1], base=2)
        return decoder_batch(
            [
                (bits[0] + ZERO, lengths),
                (separator(batch_size, PLUS), None),
                (bits[1] + ZERO, lengths),
                (separator(batch_size, EQUALS), None),
            ],
            [(sum_bits + ZERO, None if lengths is None else lengths + 1)],
        )
