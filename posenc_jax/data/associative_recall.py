"""Associative recall: key-value pairs, then a key; answer its value."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, separator
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, QUERY = 0, 1
FIRST_KEY = 2


@register_task("associative_recall")
@dataclasses.dataclass(frozen=True)
class AssociativeRecall(Task):
    """``k_1 v_1 .. k_n v_n ? k_q v_q``: the loss counts only the recalled value ``v_q``.

    The ``n`` keys of an example are distinct (drawn without replacement), values are
    drawn with replacement and the queried pair ``q`` is uniform over the ``n`` pairs, so
    the answer is unique and the model must find the key and read the token after it,
    wherever it is.

    Tokens: 0 padding, 1 query mark ``?``, ``2 .. 1 + num_keys`` keys, then ``num_values``
    values. The task length is the number of pairs; the decoder reads ``pairs ? k_q``
    (``2n + 2`` tokens) and only the last position is scored.

    Attributes:
      num_keys: size of the key alphabet; the task length cannot exceed it.
      num_values: size of the value alphabet.

    References:
      Ba et al., "Using Fast Weights to Attend to the Recent Past", NeurIPS 2016
      (associative retrieval); Arora et al., "Zoology: Measuring and Improving Recall in
      Efficient Language Models", ICLR 2024.
    """

    num_keys: int = 64
    num_values: int = 16

    def __post_init__(self):
        super().__post_init__()
        if self.num_keys < 1 or self.num_values < 2:
            raise ValueError(
                f"associative_recall needs num_keys >= 1 and num_values >= 2; got "
                f"num_keys={self.num_keys}, num_values={self.num_values}."
            )

    @property
    def vocab_size(self) -> int:
        return FIRST_KEY + self.num_keys + self.num_values

    def sequence_length(self, length: int) -> int:
        return 2 * length + 2

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        if length > self.num_keys:
            raise ValueError(
                f"associative_recall length {length} exceeds num_keys={self.num_keys}: the "
                f"keys of an example are distinct. Use length <= {self.num_keys} or a larger "
                "num_keys."
            )
        key_key, value_key, query_key = jax.random.split(key, 3)
        # The first n entries of a uniform random permutation: n keys without replacement.
        noise = jax.random.uniform(key_key, (batch_size, self.num_keys))
        keys = jnp.argsort(noise, axis=1)[:, :length].astype(jnp.int32) + FIRST_KEY
        values = jax.random.randint(
            value_key, (batch_size, length), 0, self.num_values, jnp.int32
        ) + (FIRST_KEY + self.num_keys)
        pairs_in_row = length if lengths is None else lengths[:, None]
        query = jax.random.randint(query_key, (batch_size, 1), 0, pairs_in_row)

        # The first n pairs of a row are its example of n pairs.
        pairs = jnp.stack([keys, values], axis=2).reshape(batch_size, 2 * length)
        question = jnp.concatenate(
            [separator(batch_size, QUERY), jnp.take_along_axis(keys, query, axis=1)], axis=1
        )
        return decoder_batch(
            [(pairs, None if lengths is None else 2 * lengths), (question, None)],
            [(jnp.take_along_axis(values, query, axis=1), None)],
        )
