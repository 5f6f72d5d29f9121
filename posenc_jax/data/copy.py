"""The copy task: reproduce a random string after a separator."""

import dataclasses

from posenc_jax.data._layout import StringAnswerTask
from posenc_jax.data.task import register_task
from posenc_jax.typing import Array


@register_task("copy")
@dataclasses.dataclass(frozen=True)
class Copy(StringAnswerTask):
    """``x_1 .. x_n SEP x_1 .. x_n``: the loss counts only the copied half.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols. The decoder
    reads ``x SEP x[:-1]`` and predicts ``x`` at the positions from SEP on, so a perfect
    model must attend exactly n positions back: the task isolates positional lookup.

    References:
      Graves et al., "Neural Turing Machines", 2014 (copy); Kazemnejad et al., NeurIPS 2023
      (copy as a length-generalization probe).
    """

    def answer(self, symbols: Array, lengths: Array | None) -> Array:
        return symbols
