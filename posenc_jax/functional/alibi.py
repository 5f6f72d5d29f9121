"""ALiBi: attention with linear biases (Press, Smith and Lewis, 2022)."""

import math

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import check_positive_int
from posenc_jax.functional.distance import absolute_distance, per_head
from posenc_jax.typing import Array


def alibi_slopes(num_heads: int) -> Array:
    """The per-head slopes ``m_h`` of ALiBi, float32 ``[H]``.

    For a power of two ``H`` the slopes are the geometric sequence ``2^(-8h/H)``,
    h = 1 .. H. For any other ``H`` they are the ``2^floor(log2 H)`` slopes of the nearest
    smaller power of two followed by every other slope (the 1st, 3rd, ...) of the sequence
    for twice that power, as in the paper's code: the extra heads interleave between the
    existing ones instead of re-spacing every slope.

    Args:
      num_heads: H, a positive integer.

    Returns:
      float32 ``[H]``; computed in float64 and rounded once.

    References:
      Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear Biases Enables
      Input Length Extrapolation", ICLR 2022, Section 3.
    """
    num_heads = check_positive_int(num_heads, "alibi num_heads")
    power = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = _geometric_slopes(power)
    if power < num_heads:
        slopes = np.concatenate([slopes, _geometric_slopes(2 * power)[0::2][: num_heads - power]])
    return jnp.asarray(slopes, jnp.float32)


def _geometric_slopes(power_of_two: int) -> np.ndarray:
    return 2.0 ** (-8.0 * np.arange(1, power_of_two + 1, dtype=np.float64) / power_of_two)


def alibi_bias(slopes: Array, q_positions: Array, k_positions: Array) -> Array:
    """The ALiBi bias ``-m_h |i - j|`` for query positions i and key positions j.

    The paper's causal bias is ``-m_h (i - j)`` on keys ``j <= i``; ``|i - j|`` is the same
    there and stays finite (and symmetric) above the diagonal, so the one form serves
    causal attention (where keys after the query are masked anyway) and bidirectional
    attention (the symmetric variant used by x-transformers).

    Args:
      slopes: ``[H]``, e.g. :func:`alibi_slopes`; a zero slope leaves a head unbiased.
      q_positions: integer ``[..., L]``.
      k_positions: integer ``[..., S]`` with leading dims broadcastable against
        ``q_positions``'.

    Returns:
      float32 ``[..., H, L, S]``, to be added to the logits after the ``1/sqrt(d)`` scaling.

    References:
      Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear Biases Enables
      Input Length Extrapolation", ICLR 2022, Section 3.
    """
    distance = absolute_distance(q_positions, k_positions)
    return -per_head(jnp.asarray(slopes, jnp.float32), distance) * distance[..., None, :, :]
