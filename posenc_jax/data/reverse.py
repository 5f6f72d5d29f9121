"""The reverse task: write a random string backwards after a separator."""

import dataclasses

import jax.numpy as jnp

from posenc_jax.data._layout import StringAnswerTask
from posenc_jax.data.task import register_task
from posenc_jax.typing import Array


@register_task("reverse")
@dataclasses.dataclass(frozen=True)
class Reverse(StringAnswerTask):
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

    def answer(self, symbols: Array, lengths: Array | None) -> Array:
        if lengths is None:
            return symbols[:, ::-1]
        # Entry j of row b is symbol n_b - 1 - j (entries past n_b are never read).
        source = jnp.clip(lengths[:, None] - 1 - jnp.arange(symbols.shape[1])[None, :], 0)
        return jnp.take_along_axis(symbols, source, axis=1)
