"""Contextual Position Encoding, CoPE (Golovneva, Wang, Weston & Sukhbaatar, 2024).

Positions are counts of the tokens the query decides to count. For query i and key j <= i:

  g_ij = sigmoid(q_i . k_j / sqrt(d))                 gates (Eq. 3; the official code
                                                       divides by sqrt(d))
  p_ij = sum_{t=j}^{i} g_it, clipped to npos - 1      fractional positions (Eq. 4)
  z_ij = (p - floor p) q_i.e[ceil p] + (1 - p + floor p) q_i.e[floor p]   (Eq. 5-6)

and ``z_ij`` is added to the content logit ``q_i . k_j`` before the ``1 / sqrt(d)``
scaling. ``q_i . e[p]`` is computed once for the ``npos`` integer positions and then
interpolated, as the paper suggests, instead of interpolating embedding vectors.
"""

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import check_positive_int, is_concrete
from posenc_jax.typing import Array


def cope_positions(gates: Array, num_positions: int) -> Array:
    """Contextual positions ``p_ij = sum_{t >= j} g_it``, clipped to ``num_positions - 1``.

    The sum runs over keys from j to the end of the key axis, so the gates of keys a
    query may not see must already be zero; with a causal mask it is the paper's
    ``sum_{t=j}^{i}``. The clip is part of CoPE's definition (positions beyond the last
    embedding share it), not a guard.

    Args:
      gates: float ``[..., L, S]`` in [0, 1], zero where attending is not allowed.
      num_positions: npos, the number of position embeddings.

    Returns:
      float32 ``[..., L, S]``.

    References:
      Golovneva et al., "Contextual Position Encoding: Learning to Count What's
      Important", arXiv 2405.18719, 2024, Eq. 4.
    """
    num_positions = check_positive_int(num_positions, "CoPE num_positions")
    gates = gates.astype(jnp.float32)
    counts = jnp.flip(jnp.cumsum(jnp.flip(gates, axis=-1), axis=-1), axis=-1)
    return jnp.minimum(counts, num_positions - 1.0)


def cope_logits(q: Array, position_embeddings: Array, positions: Array) -> Array:
    """Interpolated position logits ``q_i . e[p_ij]`` (unscaled).

    The integer neighbours ``floor p`` and ``ceil p`` are indices and carry no gradient;
    the interpolation weight ``p - floor p`` does, so the gates (and through them q and
    k) are trained, as in the paper.

    Args:
      q: queries ``[B, L, H, K]``.
      position_embeddings: e ``[npos, K]``, shared by the heads of a layer.
      positions: fractional positions ``[B, H, L, S]`` in ``[0, npos - 1]``, as
        :func:`cope_positions` gives them (checked here when they are known; positions
        computed inside ``jit`` are not).

    Returns:
      float32 ``[B, H, L, S]``.

    Raises:
      ValueError: for known positions outside ``[0, npos - 1]``: they would index past
        the table (NaN) or wrap around to its end.

    References:
      Golovneva et al., arXiv 2405.18719, 2024, Eq. 5-6 and Section 3 ("computing q_i e[p]
      for integer p first").
    """
    if position_embeddings.ndim != 2 or position_embeddings.shape[1] != q.shape[-1]:
        raise ValueError(
            f"CoPE position_embeddings has shape {position_embeddings.shape}; expected "
            f"[npos, K] with K = {q.shape[-1]}."
        )
    if is_concrete(positions) and positions.size:
        low, high = float(np.min(positions)), float(np.max(positions))
        if not 0 <= low <= high <= position_embeddings.shape[0] - 1:
            raise ValueError(
                f"CoPE positions span [{low:g}, {high:g}], outside [0, npos - 1] = "
                f"[0, {position_embeddings.shape[0] - 1}]; clip them with cope_positions."
            )
    per_position = jnp.einsum(
        "BLHK,PK->BHLP", q, position_embeddings, preferred_element_type=jnp.float32
    )
    fixed = jax.lax.stop_gradient(positions)
    floor = jnp.floor(fixed).astype(jnp.int32)
    ceil = jnp.ceil(fixed).astype(jnp.int32)
    ceil_weight = positions - floor
    at_floor = jnp.take_along_axis(per_position, floor, axis=-1)
    at_ceil = jnp.take_along_axis(per_position, ceil, axis=-1)
    return ceil_weight * at_ceil + (1.0 - ceil_weight) * at_floor
