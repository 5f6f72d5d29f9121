"""Scalar position features used by the naive absolute baselines."""

import jax.numpy as jnp

from posenc_jax.typing import Array


def normalized_positions(positions: Array, *, lengths: Array | None = None) -> Array:
    """``p / (n - 1)`` with ``n - 1`` the largest position in each row; float32 ``[..., L]``.

    The value a token gets depends on the length of its sequence: one step apart is
    ``1/3`` in a sequence of 4 tokens and ``1/63`` in one of 64. This is the baseline that
    shows why absolute encodings use unnormalized positions. A row whose largest position
    is 0 (a single token) maps to 0.

    Args:
      positions: integer ``[..., L]``.
      lengths: ``n`` per row ``[...]`` (largest real position + 1), for rows that end in
        padding; None takes the largest position of each row.
    """
    positions = jnp.asarray(positions, jnp.float32)
    if lengths is None:
        last = jnp.max(positions, axis=-1, keepdims=True)
    else:
        last = jnp.asarray(lengths, jnp.float32)[..., None] - 1.0
    return positions / jnp.maximum(last, 1.0)


def integer_positions(positions: Array) -> Array:
    """The raw position as a float32 feature ``[..., L]``: unbounded as positions grow."""
    return jnp.asarray(positions, jnp.float32)
