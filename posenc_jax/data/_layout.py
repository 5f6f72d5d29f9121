"""The decoder layout shared by the prompt-then-answer tasks."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data.task import Batch, Task
from posenc_jax.typing import Array

PAD, SEPARATOR = 0, 1
FIRST_SYMBOL = 2


def prompt_answer_batch(prompt: Array, answer: Array) -> Batch:
    """Teacher-forced decoder batch of ``prompt answer`` with the loss on the answer only.

    The decoder reads ``prompt answer[:-1]`` and predicts the next token everywhere; the
    weights select the positions whose target is an answer token, i.e. from the last prompt
    token on. This is the copy task's layout, shared so every task counts the same tokens.

    Args:
      prompt: int32 ``[B, P]``; its last token is the separator the answer follows.
      answer: int32 ``[B, A]``.

    Returns:
      ``inputs``, ``targets`` int32 and ``weights`` float32, each ``[B, P + A - 1]``.
    """
    batch_size, prompt_length = prompt.shape
    sequence = jnp.concatenate([prompt, answer], axis=1).astype(jnp.int32)
    length = sequence.shape[1] - 1
    weights = (jnp.arange(length) >= prompt_length - 1).astype(jnp.float32)
    return {
        "inputs": sequence[:, :-1],
        "targets": sequence[:, 1:],
        "weights": jnp.broadcast_to(weights, (batch_size, length)),
    }


@dataclasses.dataclass(frozen=True)
class StringAnswerTask(Task):
    """``x_1 .. x_n SEP answer(x)``: a random string, a separator, an answer of n tokens.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols. The decoder
    reads ``x SEP answer(x)[:-1]`` (``2n`` tokens) and the loss counts only the answer.
    Subclasses say what the answer is.

    Attributes:
      alphabet_size: number of distinct symbols (>= 2).
    """

    alphabet_size: int = 8

    def __post_init__(self):
        super().__post_init__()
        if self.alphabet_size < 2:
            raise ValueError(f"{self.name} alphabet_size must be >= 2, got {self.alphabet_size}.")

    @property
    def vocab_size(self) -> int:
        return FIRST_SYMBOL + self.alphabet_size

    def sequence_length(self, length: int) -> int:
        return 2 * length

    def answer(self, symbols: Array) -> Array:
        """The answer ``[B, n]`` to the strings ``symbols [B, n]``."""
        raise NotImplementedError

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        self.check_size(batch_size, length)
        symbols = jax.random.randint(
            key, (batch_size, length), FIRST_SYMBOL, self.vocab_size, jnp.int32
        )
        separator = jnp.full((batch_size, 1), SEPARATOR, jnp.int32)
        prompt = jnp.concatenate([symbols, separator], axis=1)
        return prompt_answer_batch(prompt, self.answer(symbols))
