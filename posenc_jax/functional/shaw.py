"""Relative position representations of Shaw, Uszkoreit & Vaswani (2018).

Each clipped relative distance ``r = clip(j - i, -k, k)`` (key position minus query
position) has a learned key vector ``a^K_r`` and value vector ``a^V_r`` shared by all heads:

  e_ij = q_i . (k_j + a^K_{r(i, j)}) / sqrt(d)        (Eq. 5)
  z_i  = sum_j alpha_ij (v_j + a^V_{r(i, j)})          (Eq. 3)

The tables have ``2k + 1`` rows; row ``r + k`` holds distance ``r``.
"""

import jax.numpy as jnp

from posenc_jax.typing import Array


def shaw_relative_index(q_positions: Array, k_positions: Array, max_distance: int) -> Array:
    """Row of the ``[2k + 1, K]`` tables for each pair: ``clip(j - i, -k, k) + k``.

    Args:
      q_positions: integer ``[..., L]``.
      k_positions: integer ``[..., S]``.
      max_distance: k; distances beyond +-k share the edge rows (Shaw et al., Eq. 6-7).

    Returns:
      int32 ``[..., L, S]`` in ``[0, 2k]``.

    References:
      Shaw, Uszkoreit & Vaswani, "Self-Attention with Relative Position Representations",
      NAACL 2018, Section 3.2.
    """
    if max_distance < 0:
        raise ValueError(f"Shaw max_distance must be >= 0, got {max_distance}.")
    q_positions, k_positions = jnp.asarray(q_positions), jnp.asarray(k_positions)
    for name, positions in (("q_positions", q_positions), ("k_positions", k_positions)):
        if not jnp.issubdtype(positions.dtype, jnp.integer):
            raise ValueError(
                f"Shaw {name} must be an integer array (clipped distances index a table), "
                f"got dtype {positions.dtype}."
            )
    distance = k_positions[..., None, :] - q_positions[..., :, None]
    return (jnp.clip(distance, -max_distance, max_distance) + max_distance).astype(jnp.int32)


def shaw_key_logits(
    q: Array, key_table: Array, q_positions: Array, k_positions: Array, max_distance: int
) -> Array:
    """The relative-key term ``q_i . a^K_{clip(j - i)}`` (unscaled) for every pair.

    Each query is multiplied by the ``2k + 1`` table rows once and the products are then
    gathered per pair, so no ``[L, S, K]`` array of relative vectors is ever built.

    Args:
      q: queries ``[B, L, H, K]``.
      key_table: ``a^K`` ``[2k + 1, K]``, shared by all heads.
      q_positions: integer ``[B, L]``.
      k_positions: integer ``[B, S]``.
      max_distance: k.

    Returns:
      float32 ``[B, H, L, S]``.

    References:
      Shaw et al., NAACL 2018, Eq. 5 (the ``x_i W^Q (a^K_ij)^T`` term).
    """
    _check_table(key_table, max_distance, q.shape[-1], "key")
    per_distance = jnp.einsum("BLHK,RK->BHLR", q, key_table, preferred_element_type=jnp.float32)
    index = shaw_relative_index(q_positions, k_positions, max_distance)
    return jnp.take_along_axis(per_distance, index[:, None], axis=-1)


def shaw_value_outputs(
    weights: Array, value_table: Array, q_positions: Array, k_positions: Array, max_distance: int
) -> Array:
    """The relative-value term ``sum_j alpha_ij a^V_{clip(j - i)}`` of the outputs.

    The weights are first summed per table row (all keys at the same clipped distance
    share one vector), then multiplied by the table, so the cost is one pass over the
    weights per row and no ``[L, S, K]`` array is built.

    Args:
      weights: attention weights ``[B, H, L, S]``.
      value_table: ``a^V`` ``[2k + 1, K]``, shared by all heads.
      q_positions: integer ``[B, L]``.
      k_positions: integer ``[B, S]``.
      max_distance: k.

    Returns:
      float32 ``[B, L, H, K]``.

    References:
      Shaw et al., NAACL 2018, Eq. 3.
    """
    _check_table(value_table, max_distance, value_table.shape[-1], "value")
    index = shaw_relative_index(q_positions, k_positions, max_distance)[:, None]
    weights = weights.astype(jnp.float32)
    per_row = jnp.stack(
        [
            jnp.sum(jnp.where(index == row, weights, 0.0), axis=-1)
            for row in range(2 * max_distance + 1)
        ],
        axis=-1,
    )
    return jnp.einsum("BHLR,RK->BLHK", per_row, value_table.astype(jnp.float32))


def _check_table(table: Array, max_distance: int, head_dim: int, what: str) -> None:
    expected = (2 * max_distance + 1, head_dim)
    if table.shape != expected:
        raise ValueError(
            f"Shaw relative {what} table has shape {table.shape}; expected [2k + 1, K] = "
            f"{list(expected)} for max_distance k={max_distance}."
        )
