"""Duplicate string: write a random string twice after a separator."""

import dataclasses

import jax.numpy as jnp

from posenc_jax.data._layout import StringAnswerTask
from posenc_jax.data.task import register_task
from posenc_jax.typing import Array


@register_task("duplicate_string")
@dataclasses.dataclass(frozen=True)
class DuplicateString(StringAnswerTask):
    """``x_1 .. x_n SEP x_1 .. x_n x_1 .. x_n``: the loss counts only the ``2n`` answer tokens.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols. The decoder
    reads ``x SEP (x x)[:-1]`` (``3n`` tokens). The first copy looks ``n + 1`` back, the
    second ``2n + 1`` back, so one model must use two distances that both grow with n.

    Attributes:
      alphabet_size: number of distinct symbols (2 in Delétang et al.).

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (duplicate
      string, a context-sensitive task); Ruoss et al., ACL 2023.
    """

    alphabet_size: int = 2

    def answer_width(self, length):
        return 2 * length

    def answer(self, symbols: Array, lengths: Array | None) -> Array:
        width = symbols.shape[1]
        n = width if lengths is None else lengths[:, None]
        source = jnp.arange(2 * width)[None, :] % n
        return jnp.take_along_axis(
            symbols, jnp.broadcast_to(source, (symbols.shape[0], 2 * width)), axis=1
        )
