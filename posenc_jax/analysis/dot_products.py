"""Dot products of sinusoidal position vectors: a function of distance only, decaying.

``PE(i) . PE(j) = sum_t sin(w_t i) sin(w_t j) + cos(w_t i) cos(w_t j) = sum_t cos(w_t (i - j))``:
the matrix of all pairs is symmetric, constant along every diagonal (it depends only on
``|i - j|``), equal to ``D/2`` on the main diagonal, and smaller away from it, with ripples
(the decay is not monotonic). This is the term that Sandwich (Chi et al. 2023) keeps as a
relative bias.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.functional.sinusoidal import sinusoidal


def position_dot_products(positions, dim: int, *, base: float = 10000.0) -> np.ndarray:
    """``PE(p) . PE(q)`` for every pair of the given positions.

    Args:
      positions: integer ``[N]``.
      dim: the encoding width D (even).
      base: the sinusoid base.

    Returns:
      float64 ``[N, N]`` (from the float32 encodings, multiplied at full precision).

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5; Yan et al.,
      "TENER: Adapting Transformer Encoder for Named Entity Recognition", arXiv 1911.04474,
      2019 (the dot product depends on distance only and is symmetric).
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 1 or not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(
            f"positions must be a 1-D integer array, got {positions.dtype}{list(positions.shape)}."
        )
    table = sinusoidal(positions, dim, base=base)
    products = jnp.einsum("pd,qd->pq", table, table, precision=jax.lax.Precision.HIGHEST)
    return np.asarray(products, np.float64)


def dot_product_profile(distances: Sequence[int], dim: int, *, base: float = 10000.0) -> np.ndarray:
    """``PE(0) . PE(k)`` for each distance k: one row of :func:`position_dot_products`.

    Args:
      distances: integers k (any sign; the profile is even in k).
      dim: the encoding width D.
      base: the sinusoid base.

    Returns:
      float64 ``[len(distances)]``; ``D/2`` at k = 0.
    """
    distances = jnp.asarray(distances)
    if distances.ndim != 1 or not jnp.issubdtype(distances.dtype, jnp.integer):
        raise ValueError(
            f"distances must be a 1-D list of integers, got shape {distances.shape} and dtype "
            f"{distances.dtype} (a fraction would be cut to an integer distance)."
        )
    distances = distances.astype(jnp.int32)
    origin = sinusoidal(jnp.zeros((1,), jnp.int32), dim, base=base)
    table = sinusoidal(distances, dim, base=base)
    products = jnp.einsum("od,kd->ok", origin, table, precision=jax.lax.Precision.HIGHEST)
    return np.asarray(products[0], np.float64)
