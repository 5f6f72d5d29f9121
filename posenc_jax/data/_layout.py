"""The decoder layout shared by the prompt-then-answer tasks, at one length or many.

A decoder example is a row of pieces (a string, a separator, a second operand, the
answer, ...) written one after another. With one length per batch every piece fills its
width and the row is their concatenation. With a length per example (training on a range
of lengths) each piece holds only its first ``n`` entries, the pieces are written
back to back and padding follows the last one, so the real tokens of a row are exactly
the tokens of the same example built at its own length.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from posenc_jax.data.task import Batch, Task
from posenc_jax.typing import Array

PAD, SEPARATOR = 0, 1
FIRST_SYMBOL = 2

#: A piece of a row: its values ``[B, W]`` and how many of them each row uses ``[B]``
#: (None: all ``W``).
Piece = tuple[Array, Array | None]


def ragged_concat(pieces: Sequence[Piece]) -> tuple[Array, Array]:
    """Writes each row's pieces back to back, padding (token 0) after the last one.

    Args:
      pieces: ``(values [B, W_i], lengths [B] or None)``; row ``b`` uses the first
        ``lengths[b]`` values of piece ``i``.

    Returns:
      ``(rows [B, sum W_i] int32, lengths [B] int32)``: the rows and their real lengths.
      With every length None this is ``concatenate(values, axis=1)``.
    """
    batch = pieces[0][0].shape[0]
    width = sum(values.shape[1] for values, _ in pieces)
    if all(lengths is None for _, lengths in pieces):
        rows = jnp.concatenate([values for values, _ in pieces], axis=1).astype(jnp.int32)
        return rows, jnp.full((batch,), width, jnp.int32)
    rows = jnp.full((batch, width), PAD, jnp.int32)
    offset = jnp.zeros((batch,), jnp.int32)
    row_index = jnp.arange(batch)[:, None]
    for values, lengths in pieces:
        columns = jnp.arange(values.shape[1])[None, :]
        if lengths is None:
            lengths = jnp.full((batch,), values.shape[1], jnp.int32)
        # Entries past a row's length go to an index past the row and are dropped.
        target = jnp.where(columns < lengths[:, None], offset[:, None] + columns, width)
        rows = rows.at[row_index, target].set(values.astype(jnp.int32), mode="drop")
        offset = offset + lengths
    return rows, offset


def decoder_batch(prompt: Sequence[Piece], answer: Sequence[Piece]) -> Batch:
    """Teacher-forced decoder batch of ``prompt answer`` with the loss on the answer only.

    The decoder reads ``prompt answer[:-1]`` and predicts the next token everywhere; the
    weights select the positions whose target is an answer token, i.e. from the last prompt
    token on. This is the copy task's layout, shared so every task counts the same tokens.

    Args:
      prompt: the prompt's pieces (see :func:`ragged_concat`); its last token is the one
        the answer follows (a separator, ``=``, the query).
      answer: the answer's pieces.

    Returns:
      ``inputs``, ``targets`` int32 and ``weights`` float32, each ``[B, P + A - 1]`` for
      total piece widths P and A; when some piece has lengths of its own (rows of
      different lengths), also ``padding_mask`` (bool, True on real input tokens).
    """
    ragged = any(lengths is not None for _, lengths in list(prompt) + list(answer))
    sequence, total = ragged_concat(list(prompt) + list(answer))
    _, prompt_length = ragged_concat(prompt)
    width = sequence.shape[1] - 1
    steps = jnp.arange(width)[None, :]
    weights = (steps >= prompt_length[:, None] - 1) & (steps < total[:, None] - 1)
    batch = {
        "inputs": sequence[:, :-1],
        "targets": sequence[:, 1:],
        "weights": weights.astype(jnp.float32),
    }
    if ragged:
        real = steps < total[:, None] - 1
        # The last answer token is never an input: padding there too.
        batch["inputs"] = jnp.where(real, batch["inputs"], PAD)
        batch["padding_mask"] = real
    return batch


def separator(batch_size: int, token: int = SEPARATOR) -> Array:
    """A column ``[B, 1]`` of one token."""
    return jnp.full((batch_size, 1), token, jnp.int32)


def leading(lengths: Array | None, width: int) -> Array:
    """bool ``[B, width]``: True on each row's first ``lengths`` entries (all when None)."""
    if lengths is None:
        return jnp.ones((1, width), jnp.bool_)
    return jnp.arange(width)[None, :] < lengths[:, None]


@dataclasses.dataclass(frozen=True)
class StringAnswerTask(Task):
    """``x_1 .. x_n SEP answer(x)``: a random string, a separator, an answer.

    Tokens: 0 padding, 1 separator, ``2 .. 2 + alphabet_size - 1`` symbols. The decoder
    reads ``x SEP answer(x)[:-1]`` and the loss counts only the answer. Subclasses say
    what the answer is and how long it is (``answer_width``, n by default).

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

    def answer_width(self, length: int) -> int:
        """Answer tokens for a string of ``length`` symbols."""
        return length

    def sequence_length(self, length: int) -> int:
        return length + self.answer_width(length)

    def answer(self, symbols: Array, lengths: Array | None) -> Array:
        """The answer ``[B, answer_width(N)]`` to the strings ``symbols [B, N]``; with
        ``lengths [B]`` the string of row b is its first ``lengths[b]`` symbols and the
        answer its first ``answer_width(lengths[b])`` entries."""
        raise NotImplementedError

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        symbols = jax.random.randint(
            key, (batch_size, length), FIRST_SYMBOL, self.vocab_size, jnp.int32
        )
        answer_lengths = None if lengths is None else self.answer_width(lengths)
        return decoder_batch(
            [(symbols, lengths), (separator(batch_size), None)],
            [(self.answer(symbols, lengths), answer_lengths)],
        )
