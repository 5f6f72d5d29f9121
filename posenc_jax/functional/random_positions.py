"""Sorted random subsets of positions: the sampling behind randomized positional encodings."""

import jax
import jax.numpy as jnp

from posenc_jax.typing import Array


def random_subset_positions(
    key: Array, batch_size: int, length: int, max_position: int, lengths: Array | None = None
) -> Array:
    """Per row, a uniformly random sorted subset of ``[0, max_position)``.

    Row ``b`` gets ``n = lengths[b]`` distinct positions in increasing order, every subset
    of size ``n`` equally likely: the distribution of ``sort(choice(M, n, replace=False))``
    in Ruoss et al. 2023. They are drawn by Floyd's algorithm (Bentley and Floyd 1987): for
    ``j = M - n, ..., M - 1`` draw ``t`` uniform in ``[0, j]`` and add ``t``, or ``j`` if
    ``t`` was already added. That takes ``n`` draws and ``O(n^2)`` comparisons, where a
    random permutation of all ``M`` positions sorts ``M`` keys (58 ms for 64 rows of
    ``M = 2,048`` on a 2-core CPU, against 0.4 ms).

    The ``i``-th draw of a row uses ``fold_in(row_key, i)`` and the row's own ``n``, so the
    real positions depend only on the row's key and ``n``: a padded example gets the
    positions it gets unpadded. The ``length - n`` padding slots that follow take the
    smallest integers that are not among the row's positions, in increasing order
    (distinct from the real ones and below ``length <= M``; padding is never attended).

    Args:
      key: a PRNG key; row ``b`` uses ``split(key, batch_size)[b]``.
      batch_size: B.
      length: L, the width of each row, at most ``max_position``.
      max_position: M.
      lengths: int ``[B]``, each row's number of real positions (at most L), or None for L.

    Returns:
      int32 ``[batch_size, length]``: each row's real positions, strictly increasing, then
      its padding slots.

    References:
      Ruoss et al., "Randomized Positional Encodings Boost Length Generalization of
      Transformers", ACL 2023; Bentley and Floyd, "Programming Pearls: A Sample of
      Brilliance", CACM 30(9), 1987.
    """
    if not 0 < length <= max_position:
        raise ValueError(
            f"a row of {length} positions needs 0 < length <= max_position={max_position}."
        )
    if lengths is None:
        lengths = jnp.full((batch_size,), length, jnp.int32)
    slots = jnp.arange(length, dtype=jnp.int32)

    def sample_row(row_key: Array, row_length: Array) -> Array:
        def draw(i, chosen):
            j = max_position - row_length + i
            t = jax.random.randint(jax.random.fold_in(row_key, i), (), 0, j + 1, jnp.int32)
            value = jnp.where(jnp.any(chosen == t), j, t)
            return chosen.at[i].set(jnp.where(i < row_length, value, -1))

        chosen = jax.lax.fori_loop(0, length, draw, jnp.full((length,), -1, jnp.int32))
        real = slots < row_length
        # Real positions first, increasing; padding slots (marked max_position) after them.
        ordered = jnp.sort(jnp.where(real, chosen, max_position))
        # The smallest integers not chosen, increasing: at most n of [0, L) are chosen, so
        # [0, L) holds the L - n that padding needs.
        taken = jnp.any(slots[:, None] == chosen[None, :], axis=1)
        free = jnp.sort(jnp.where(taken, length + slots, slots))
        padding = free[jnp.clip(slots - row_length, 0, length - 1)]
        return jnp.where(real, ordered, padding)

    keys = jax.random.split(key, batch_size)
    return jax.vmap(sample_row)(keys, jnp.asarray(lengths, jnp.int32))
