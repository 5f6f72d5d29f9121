"""Decimal addition, digits least significant first, with each digit's place as its position."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, ragged_concat, separator
from posenc_jax.data.task import LENGTHS_STREAM, Batch, Task, register_task
from posenc_jax.typing import Array

PAD, PLUS, EQUALS = 0, 1, 2
#: Token of digit 0; digit d is ``ZERO + d``.
ZERO = 3


@register_task("addition")
@dataclasses.dataclass(frozen=True)
class Addition(Task):
    """``a_0 .. a_{n-1} + b_0 .. b_{m-1} = s_0 .. s_{max(n, m)}``, digits least significant first.

    Tokens: 0 padding, 1 ``+``, 2 ``=``, ``3 + d`` the digit d. At task length n both
    operands have n digits; an operand of two or more digits has a nonzero leading
    (most significant) digit, so an n-digit problem is one. With ``min_length=m`` each
    operand's digit count is drawn on its own, uniformly from ``[m, n]`` (the literature
    trains on operands of independently drawn lengths, e.g. 1..N). The sum is written with
    ``max(n, m) + 1`` digits, its last being the final carry (0 or 1), so an answer's width
    follows from its operands. The loss counts only the answer; the decoder reads
    ``a + b = s[:-1]`` (``3n + 2`` tokens at length n).

    The batch also carries ``task_positions``: each digit's 1-based place in its own
    number, counted from the least significant digit (so digits of equal significance
    in both operands and the answer share one), and 0 for ``+``, ``=`` and padding. Abacus
    embeddings and position coupling index their tables by them.

    References:
      McLeish et al., "Transformers Can Do Arithmetic with the Right Embeddings", NeurIPS
      2024, arXiv 2405.17399 (reversed operands and answer, operand lengths drawn
      independently); Cho et al., "Position Coupling: Improving Length Generalization of
      Arithmetic Transformers Using Task Structure", NeurIPS 2024, arXiv 2405.20671.
    """

    gives_task_positions = True

    @property
    def vocab_size(self) -> int:
        return ZERO + 10

    def sequence_length(self, length: int) -> int:
        return 3 * length + 2

    def sample(
        self, key: Array, batch_size: int, length: int, *, min_length: int | None = None
    ) -> Batch:
        """A batch of ``batch_size`` problems; with ``min_length`` each operand draws its
        own digit count from ``[min_length, length]`` (see :meth:`Task.sample`)."""
        self.check_size(batch_size, length)
        counts = None
        if min_length is not None:
            self.check_min_length(min_length, length)
            counts = jax.random.randint(
                jax.random.fold_in(key, LENGTHS_STREAM), (2, batch_size), min_length, length + 1
            ).astype(jnp.int32)
        return self._sample(key, batch_size, length, counts)

    def _sample(self, key: Array, batch_size: int, length: int, counts: Array | None) -> Batch:
        """The batch at ``length`` digits, or with digit counts ``[2, B]`` per operand."""
        digits_key, leading_key = jax.random.split(key)
        digits = jax.random.randint(digits_key, (2, batch_size, length), 0, 10, jnp.int32)
        nonzero = jax.random.randint(leading_key, (2, batch_size), 1, 10, jnp.int32)
        width = jnp.full((2, batch_size), length, jnp.int32) if counts is None else counts
        # The most significant digit of a number of two or more digits is nonzero.
        top = jnp.arange(length)[None, None, :] == width[..., None] - 1
        digits = jnp.where(top & (width[..., None] > 1), nonzero[..., None], digits)
        # Digits past an operand's count are zero, so they change neither sum nor carry.
        digits = jnp.where(jnp.arange(length)[None, None, :] < width[..., None], digits, 0)
        total = add_little_endian(digits[0], digits[1])
        a_count, b_count = (None, None) if counts is None else (counts[0], counts[1])
        answer_count = None if counts is None else jnp.maximum(counts[0], counts[1]) + 1
        places = jnp.arange(1, length + 2, dtype=jnp.int32)[None, :]
        no_place = jnp.zeros((batch_size, 1), jnp.int32)
        operand_places = jnp.broadcast_to(places[:, :length], (batch_size, length))
        prompt = [
            (digits[0] + ZERO, a_count),
            (separator(batch_size, PLUS), None),
            (digits[1] + ZERO, b_count),
            (separator(batch_size, EQUALS), None),
        ]
        answer = [(total + ZERO, answer_count)]
        batch = decoder_batch(prompt, answer)
        place_pieces = [
            (operand_places, a_count),
            (no_place, None),
            (operand_places, b_count),
            (no_place, None),
            (jnp.broadcast_to(places, (batch_size, length + 1)), answer_count),
        ]
        task_positions = ragged_concat(place_pieces)[0][:, :-1]
        if "padding_mask" in batch:
            task_positions = jnp.where(batch["padding_mask"], task_positions, 0)
        return {**batch, "task_positions": task_positions}


def add_little_endian(a: Array, b: Array, *, base: int = 10) -> Array:
    """The ``n + 1`` digits ``[B, n + 1]`` of the sums of ``[B, n]`` digit arrays in
    ``base``, least significant first.

    The numbers can be far wider than any integer dtype, so the sum is carried digit by
    digit.
    """

    def add_digit(carry, column):
        total = column[0] + column[1] + carry
        return total // base, total % base

    columns = jnp.stack([a, b], axis=0).transpose(2, 0, 1)  # [n, 2, B]
    carry, digits = jax.lax.scan(add_digit, jnp.zeros(a.shape[0], jnp.int32), columns)
    return jnp.concatenate([digits.T, carry[:, None]], axis=1)
