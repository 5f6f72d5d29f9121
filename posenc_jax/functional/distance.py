"""Distances between query and key positions, shared by the relative-bias encodings."""

import jax.numpy as jnp
import numpy as np

from posenc_jax.typing import Array


def broadcast_positions(q_positions: Array, k_positions: Array) -> tuple[Array, Array]:
    """int32 ``q_positions [..., L]`` and ``k_positions [..., S]`` with one set of leading dims.

    The leading dims broadcast explicitly (a ``[L]`` row against ``[B, S]`` is fine), so
    callers work under ``jax_numpy_rank_promotion="raise"``.

    Raises:
      ValueError: if either array is not integer or the leading dims do not broadcast.
    """
    q_positions, k_positions = jnp.asarray(q_positions), jnp.asarray(k_positions)
    for name, positions in (("q_positions", q_positions), ("k_positions", k_positions)):
        if not jnp.issubdtype(positions.dtype, jnp.integer) or positions.ndim < 1:
            raise ValueError(
                f"{name} must be an integer array [..., length], got {positions.dtype}"
                f"{list(positions.shape)}."
            )
    try:
        lead = np.broadcast_shapes(q_positions.shape[:-1], k_positions.shape[:-1])
    except ValueError:
        raise ValueError(
            f"q_positions {q_positions.shape} and k_positions {k_positions.shape} have leading "
            "dims that do not broadcast."
        ) from None
    q_positions = jnp.broadcast_to(q_positions, lead + q_positions.shape[-1:]).astype(jnp.int32)
    k_positions = jnp.broadcast_to(k_positions, lead + k_positions.shape[-1:]).astype(jnp.int32)
    return q_positions, k_positions


def relative_positions(q_positions: Array, k_positions: Array) -> Array:
    """``i - j`` for every query position i and key position j, int32 ``[..., L, S]``.

    Leading dims broadcast as in :func:`broadcast_positions`.
    """
    q_positions, k_positions = broadcast_positions(q_positions, k_positions)
    return q_positions[..., :, None] - k_positions[..., None, :]


def absolute_distance(q_positions: Array, k_positions: Array) -> Array:
    """``|i - j|`` as float32 ``[..., L, S]``; exact, since it is formed in integers first."""
    return jnp.abs(relative_positions(q_positions, k_positions)).astype(jnp.float32)


def per_head(values: Array, distance: Array) -> Array:
    """Reshapes per-head ``values [H]`` to broadcast against ``distance[..., None, :, :]``.

    Returns:
      ``values`` with shape ``(1, ..., 1, H, 1, 1)`` of rank ``distance.ndim + 1``.
    """
    values = jnp.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"per-head parameters must be a vector [H], got shape {values.shape}.")
    return values.reshape((1,) * (distance.ndim - 2) + (values.shape[0], 1, 1))
