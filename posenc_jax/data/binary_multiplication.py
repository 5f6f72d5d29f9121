"""Binary multiplication: multiply two binary numbers written least-significant bit first."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, leading, separator
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, TIMES, EQUALS, ZERO, ONE = 0, 1, 2, 3, 4


@register_task("binary_multiplication")
@dataclasses.dataclass(frozen=True)
class BinaryMultiplication(Task):
    """``a_0 .. a_{n-1} * b_0 .. b_{n-1} = p_0 .. p_{2n-1}``, bits least significant first.

    Tokens: 0 padding, 1 ``*``, 2 ``=``, 3 bit zero, 4 bit one. Both operands have exactly
    ``length`` bits drawn uniformly (leading zeros occur) and the product is written with
    all ``2n`` bits it can need; the loss counts those ``2n`` bits. The decoder reads
    ``a * b = p[:-1]`` (``4n + 1`` tokens). Bit k of the product depends on every operand
    bit pair ``i + j <= k`` and on the carries below, so unlike addition no fixed window
    of positions holds the answer.

    As for :class:`~posenc_jax.data.binary_addition.BinaryAddition`, the operands have a
    fixed width and the product a fixed length, where Delétang et al. draw operand widths
    and end the product with a termination token.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (binary
      multiplication, little-endian, a context-sensitive task).
    """

    @property
    def vocab_size(self) -> int:
        return ONE + 1

    def sequence_length(self, length: int) -> int:
        return 4 * length + 1

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        bits = jax.random.randint(key, (2, batch_size, length), 0, 2, jnp.int32)
        # Bits past a row's width are zero, so its product ends at bit 2n.
        bits = jnp.where(leading(lengths, length)[None], bits, 0)
        product = multiply_little_endian(bits[0], bits[1])
        return decoder_batch(
            [
                (bits[0] + ZERO, lengths),
                (separator(batch_size, TIMES), None),
                (bits[1] + ZERO, lengths),
                (separator(batch_size, EQUALS), None),
            ],
            [(product + ZERO, None if lengths is None else 2 * lengths)],
        )


def multiply_little_endian(a: Array, b: Array) -> Array:
    """The ``2n`` little-endian bits ``[B, 2n]`` of the products of ``[B, n]`` bit arrays.

    Column k of the schoolbook product holds ``sum_{i + j = k} a_i b_j``; the carries are
    then propagated column by column, so no integer ever exceeds ``2n``.
    """
    width = a.shape[1]
    # columns[b, k] = sum_i a[b, i] * b[b, k - i]
    pairs = a[:, :, None] * b[:, None, :]  # [B, i, j]
    diagonal = jnp.arange(width)[:, None] + jnp.arange(width)[None, :]  # i + j
    columns = jnp.zeros((a.shape[0], 2 * width), jnp.int32)
    columns = columns.at[:, diagonal].add(pairs)

    def add_column(carry, column):
        total = column + carry
        return total // 2, total % 2

    _, product = jax.lax.scan(add_column, jnp.zeros(a.shape[0], jnp.int32), columns.T)
    return product.T
