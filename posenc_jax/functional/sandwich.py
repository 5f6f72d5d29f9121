"""Sandwich: the parameter-free bias of Chi, Fan, Rudnicky and Ramadge (2023)."""

import jax.numpy as jnp

from posenc_jax._checks import check_positive_int
from posenc_jax.functional.distance import absolute_distance, per_head
from posenc_jax.functional.sinusoidal import sinusoidal_inv_freq
from posenc_jax.typing import Array


def sandwich_bias(
    q_positions: Array,
    k_positions: Array,
    *,
    num_heads: int,
    dim: int = 64,
    base: float = 10000.0,
) -> Array:
    """Sandwich bias ``(p_i . p_j - d'/2) / (8h / H)`` for heads h = 1 .. H.

    ``p_i . p_j = sum_{t=1}^{d'/2} cos((i - j) omega_t)`` with
    ``omega_t = base^(-2t / d')`` is the dot product of the sinusoidal embeddings of
    positions i and j: it equals ``d'/2`` at distance 0 and decays (with ripples) as the
    distance grows, so subtracting ``d'/2`` makes the bias 0 on the diagonal and negative
    elsewhere. Heads are scaled like ALiBi's slopes, head h by ``H / (8h)``. The cosine is
    even, so the bias is symmetric in ``i - j``: one form for causal and bidirectional use.

    The cosine is taken of the integer distance (times ``omega_t``), not formed as a dot
    product of two sinusoids of large positions, so the bias depends on ``i - j`` only,
    however large the positions are. Its error grows with the distance, through the float32
    angle ``|i - j| omega_t``: against float64, 5e-3 at distances up to 64,000 and 0.4 at
    10^7 (a fixed-point reduction as in RoPE's cosines is exact there, but took twice the
    time at L = 1,024 on CPU, where XLA vectorizes this cosine).

    Args:
      q_positions: integer ``[..., L]``.
      k_positions: integer ``[..., S]``.
      num_heads: H.
      dim: d', the sinusoid width (a positive even number); NeMo uses the per-head dim.
      base: the sinusoid base.

    Returns:
      float32 ``[..., H, L, S]``, added to the logits after the ``1/sqrt(d)`` scaling.

    References:
      Chi, Fan, Rudnicky and Ramadge, "Dissecting Transformer Length Extrapolation via the
      Lens of Receptive Field Analysis", ACL 2023, Section 5 (Sandwich); frequencies
      t = 1 .. d'/2 as in NeMo's ``SandwichRelativePositionEmbedding``.
    """
    num_heads = check_positive_int(num_heads, "sandwich num_heads")
    # The paper sums t = 1 .. d'/2, one step past the sinusoidal table's t = 0 .. d'/2 - 1.
    inv_freq = sinusoidal_inv_freq(dim, base=base) * jnp.float32(base) ** (-2.0 / dim)
    distance = absolute_distance(q_positions, k_positions)
    # XLA fuses the cosines into the sum under jit: no [..., L, S, d'/2] array is stored.
    angles = distance[..., None] * inv_freq.reshape((1,) * distance.ndim + (-1,))
    dot = jnp.sum(jnp.cos(angles), axis=-1) - dim / 2
    heads = jnp.arange(1, num_heads + 1, dtype=jnp.float32)
    return dot[..., None, :, :] / per_head(8.0 * heads / num_heads, dot)
