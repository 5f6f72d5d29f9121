"""Block finding: name the one block that holds every query letter (the MTA toy task)."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, DELIMITER, QUERY_MARK = 0, 1, 2
FIRST_LETTER = 3


@register_task("block_finding")
@dataclasses.dataclass(frozen=True)
class BlockFinding(Task):
    """``block . block . ... . block # q_1 .. q_L`` then the one block holding all ``q``.

    Each of the ``length`` blocks has ``block_letters`` distinct letters; the query is
    ``query_letters`` distinct letters of the target block, in random order. Every other
    block (a distractor) may share some query letters but never all of them, so the answer
    is unique. The decoder reads ``blocks # query answer[:-1]`` and the loss counts only the
    ``block_letters`` answer tokens; the study's sequence accuracy is then whole-block
    accuracy, and the paper's error rate is one minus it.

    Tokens: 0 padding, 1 block delimiter, 2 query mark, ``3 .. 3 + alphabet_size - 1``
    letters. The task length is the number of blocks, so a model trained on n blocks can
    be evaluated on 2n .. 8n.

    Sampling is vectorized: each block is a random ordering's first ``block_letters``
    letters, and a distractor that happens to hold every query letter has its first query
    letter replaced by the ordering's next letter (which is in neither the block nor,
    since the block held it, equal to that query letter). No example is ever resampled.
    Distractors are not forced to differ from one another (the original generator makes
    them unique); that does not affect the answer's uniqueness.

    Attributes:
      alphabet_size: number of letters (26 in the paper); must exceed ``block_letters``.
      block_letters: N, letters per block (5 in the paper; 3-4 keep CPU training quick).
      query_letters: L, letters in the query, 1 <= L <= N (2 in the paper).

    References:
      Golovneva, Wang, Weston & Sukhbaatar, "Multi-Token Attention", arXiv:2504.00927,
      2025, Section 3 (toy task; facebookresearch/RAM ``projects/mta/toy_task``).
    """

    alphabet_size: int = 26
    block_letters: int = 3
    query_letters: int = 2

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.query_letters <= self.block_letters:
            raise ValueError(
                f"block_finding needs 1 <= query_letters <= block_letters; got "
                f"query_letters={self.query_letters}, block_letters={self.block_letters}."
            )
        if self.alphabet_size <= self.block_letters:
            raise ValueError(
                f"block_finding alphabet_size={self.alphabet_size} must exceed "
                f"block_letters={self.block_letters} (a distractor is repaired with a letter "
                "outside it)."
            )

    @property
    def vocab_size(self) -> int:
        return FIRST_LETTER + self.alphabet_size

    def sequence_length(self, length: int) -> int:
        # length blocks with their delimiters (the last one is the query mark), the query,
        # and the answer without its final letter (nothing is predicted after it).
        return length * (self.block_letters + 1) + self.query_letters + self.block_letters - 1

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        n, big_n = self.block_letters, self.alphabet_size
        target_key, query_key, distractor_key, slot_key = jax.random.split(key, 4)

        target = _random_orderings(target_key, (batch_size,), big_n)[:, :n]
        query_order = _random_orderings(query_key, (batch_size,), n)[:, : self.query_letters]
        query = jnp.take_along_axis(target, query_order, axis=1)

        orderings = _random_orderings(distractor_key, (batch_size, length), big_n)
        distractors = _without_full_query(orderings, query, n)
        blocks_in_row = jnp.full((batch_size,), length) if lengths is None else lengths
        slot = jax.random.randint(slot_key, (batch_size, 1, 1), 0, blocks_in_row[:, None, None])
        is_target = jnp.arange(length)[None, :, None] == slot
        blocks = jnp.where(is_target, target[:, None, :], distractors)

        # A row's first blocks are its example; its last delimiter is the query mark.
        delimiters = jnp.full((batch_size, length, 1), DELIMITER, jnp.int32)
        context = jnp.concatenate([blocks + FIRST_LETTER, delimiters], axis=2)
        context = context.reshape(batch_size, length * (n + 1))
        context_length = blocks_in_row * (n + 1)
        context = context.at[jnp.arange(batch_size), context_length - 1].set(QUERY_MARK)
        return decoder_batch(
            [
                (context, None if lengths is None else context_length),
                (query + FIRST_LETTER, None),
            ],
            [(target + FIRST_LETTER, None)],
        )


def _random_orderings(key: Array, batch_shape: tuple[int, ...], size: int) -> Array:
    """Independent uniform permutations of ``0 .. size - 1``, int32 ``[*batch_shape, size]``."""
    noise = jax.random.uniform(key, (*batch_shape, size))
    return jnp.argsort(noise, axis=-1).astype(jnp.int32)


def _without_full_query(orderings: Array, query: Array, block_letters: int) -> Array:
    """Blocks ``orderings[..., :N]`` with every block that holds all query letters repaired.

    Args:
      orderings: ``[B, n, A]`` permutations of the alphabet; a block is the first N.
      query: ``[B, L]`` query letters.
      block_letters: N.

    Returns:
      int32 ``[B, n, N]`` blocks of distinct letters, none containing every query letter.
    """
    blocks = orderings[..., :block_letters]
    spare = orderings[..., block_letters]
    # holds[b, s, l, p]: position p of block s is query letter l.
    holds = blocks[:, :, None, :] == query[:, None, :, None]
    has_all = jnp.all(jnp.any(holds, axis=-1), axis=-1)
    replace = holds[:, :, 0, :] & has_all[..., None]
    return jnp.where(replace, spare[..., None], blocks)
