"""Even pairs: is the number of unequal neighbouring bits ("ab" or "ba") even?"""

import dataclasses

import jax.numpy as jnp

from posenc_jax.data._layout import leading
from posenc_jax.data.parity import Parity
from posenc_jax.data.task import register_task
from posenc_jax.typing import Array


@register_task("even_pairs")
@dataclasses.dataclass(frozen=True)
class EvenPairs(Parity):
    """``b_1 .. b_n SEP p`` with ``p`` the parity of ``#{i : b_i != b_(i+1)}``.

    The count of unequal neighbours is even exactly when the first and last bits agree,
    so a model that finds both ends solves it at every length: a regular task that
    separates encodings which can locate the last token from those which cannot.

    The layout is parity's: tokens 0 padding, 1 separator, 2 bit zero, 3 bit one; the
    answer is 2 for an even count and 3 for an odd one (class 0 / 1 in Delétang et al.).
    The decoder reads ``b SEP`` (``n + 1`` tokens) and only the last position is scored.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (even pairs,
      a regular task).
    """

    def answer_bit(self, bits: Array, lengths: Array | None) -> Array:
        # Pair i is (b_i, b_{i+1}); it counts when both bits belong to the row's string.
        pairs = leading(None if lengths is None else lengths - 1, bits.shape[1] - 1)
        unequal = jnp.where(pairs, bits[:, 1:] != bits[:, :-1], False)
        return jnp.sum(unequal, axis=1, keepdims=True) % 2
