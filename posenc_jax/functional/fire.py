"""FIRE: functional interpolation for relative positions (Li et al., 2024)."""

import math

import jax
import jax.numpy as jnp

from posenc_jax.functional.distance import absolute_distance, broadcast_positions
from posenc_jax.typing import Array


def fire_normalized_distance(
    q_positions: Array,
    k_positions: Array,
    *,
    c: Array | float = 0.1,
    threshold: Array | float = 512.0,
    eps: float = 1e-6,
) -> Array:
    """FIRE's progressive interpolation ``psi(|i - j|) / psi(max(L, i))``.

    ``psi(x) = log(|c x| + 1)`` amplifies differences between nearby positions, and the
    normalizer ``psi(max(L, i))`` maps every distance a query can see into ``[0, 1]``
    whatever the sequence length; the threshold L keeps short contexts (i < L) from being
    stretched to the whole range. As in the paper's listing, ``eps`` is added to the
    normalizer and the absolute value is taken of ``c (i - j)``: the map is symmetric in
    ``i - j``, which is also the form used here for bidirectional attention (the paper is
    causal only). The normalizer uses the query position i itself, so a tile of the
    attention matrix needs only its own positions.

    Args:
      q_positions: integer ``[..., L]`` (the query positions i).
      k_positions: integer ``[..., S]``.
      c: the log-transform scale (learned; 0.1 at init).
      threshold: L, the smallest normalizer position (learned; 512 at init). Its absolute
        value is used, as in the paper's listing.
      eps: keeps the normalizer away from 0.

    Returns:
      float32 ``[..., L, S]``; in ``[0, 1]`` on and below the diagonal.

    References:
      Li et al., "Functional Interpolation for Relative Positions Improves Long Context
      Transformers", ICLR 2024, Section 3 and Appendix (listing).
    """
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            f"FIRE eps must be a finite number > 0 (it keeps the normalizer off 0), got {eps!r}."
        )
    c = jnp.asarray(c, jnp.float32)
    threshold = jnp.abs(jnp.asarray(threshold, jnp.float32))
    distance = absolute_distance(q_positions, k_positions)
    query = broadcast_positions(q_positions, k_positions)[0][..., :, None].astype(jnp.float32)
    normalizer = jnp.log(jnp.abs(c * jnp.maximum(query, threshold)) + 1.0) + eps
    return jnp.log(jnp.abs(c * distance) + 1.0) / normalizer


def fire_mlp(
    normalized_distance: Array,
    hidden_kernel: Array,
    hidden_bias: Array,
    out_kernel: Array,
    out_bias: Array,
) -> Array:
    """FIRE's ``f_theta``: a 1 -> W -> H ReLU MLP applied to each normalized distance.

    A plain function of parameter arrays (no Flax layer), so a bias closure that calls it
    stays pure and can run tile by tile inside ``lax.scan``.

    Args:
      normalized_distance: float ``[..., L, S]`` from :func:`fire_normalized_distance`.
      hidden_kernel: ``[W]``, the weights of the 1 -> W layer.
      hidden_bias: ``[W]``.
      out_kernel: ``[W, H]``.
      out_bias: ``[H]``.

    Returns:
      float32 ``[..., H, L, S]``.

    References:
      Li et al., "Functional Interpolation for Relative Positions Improves Long Context
      Transformers", ICLR 2024, Section 3.
    """
    if hidden_kernel.ndim != 1 or hidden_bias.shape != hidden_kernel.shape:
        raise ValueError(
            f"fire hidden_kernel and hidden_bias must both be [W]; got {hidden_kernel.shape} "
            f"and {hidden_bias.shape}."
        )
    width = hidden_kernel.shape[0]
    if (
        out_kernel.ndim != 2
        or out_kernel.shape[0] != width
        or out_bias.shape != out_kernel.shape[1:]
    ):
        raise ValueError(
            f"fire out_kernel must be [W={width}, H] and out_bias [H]; got {out_kernel.shape} "
            f"and {out_bias.shape}."
        )
    x = jnp.asarray(normalized_distance, jnp.float32)
    lead = (1,) * x.ndim
    hidden = jax.nn.relu(
        x[..., None] * hidden_kernel.reshape(lead + (width,)) + hidden_bias.reshape(lead + (width,))
    )
    bias = jnp.einsum("...lsw,wh->...hls", hidden, out_kernel.astype(jnp.float32))
    return bias + out_bias.reshape((1,) * (x.ndim - 2) + (-1, 1, 1)).astype(jnp.float32)
