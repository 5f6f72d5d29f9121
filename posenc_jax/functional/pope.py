"""Polar Coordinate Position Embeddings (PoPE): magnitudes from content, phases from position.

RoPE rotates pairs of features whose own angle carries content, so the logit mixes what a
token is with where it is. PoPE (Gopalakrishnan et al. 2025) makes each of a head's ``K``
features one complex number whose magnitude is ``softplus`` of the feature and whose phase
is position alone: for a query at ``t`` and a key at ``s``,

    q~_c = softplus(q_c) e^{i t theta_c},   k~_c = softplus(k_c) e^{i (s theta_c + delta_c)},
    logit = Re[sum_c conj(q~_c) k~_c] / sqrt(K)
          = sum_c softplus(q_c) softplus(k_c) cos((t - s) theta_c - delta_c) / sqrt(K),

with ``theta_c = base^(-c / K)`` for ``c = 0..K-1`` (K frequencies, twice RoPE's) and a
learned per-head phase offset ``delta`` clamped to ``[-2 pi, 0]``. As real vectors the
queries and keys become ``[mu cos(phase), mu sin(phase)]``, ``2K`` features; the offset is
put on the queries' phase (``-delta``), which gives the same logits and lets grouped
key/value heads stay shared.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import check_base
from posenc_jax.functional.rope import rope_cos_sin
from posenc_jax.typing import Array


def pope_inv_freq(head_dim: int, *, base: float = 10000.0) -> np.ndarray:
    """The ``K`` frequencies ``theta_c = base^(-c / K)``, float64 ``[K]``.

    References:
      Gopalakrishnan, Csordás, Schmidhuber, Mozer, "Decoupling the 'What' and 'Where' With
      Polar Coordinate Positional Embeddings", arXiv 2509.10534, 2025.
    """
    if head_dim <= 0:
        raise ValueError(f"PoPE head_dim must be positive, got {head_dim}.")
    check_base(base, "PoPE")
    return base ** (-np.arange(head_dim, dtype=np.float64) / head_dim)


def clamp_phase_bias(phase_bias: Array) -> Array:
    """The learned offsets ``delta`` as used: clamped to ``[-2 pi, 0]``."""
    return jnp.clip(phase_bias, -2 * math.pi, 0.0)


def apply_pope(
    x: Array,
    positions: Array,
    inv_freq: np.ndarray,
    *,
    phase_bias: Array | None = None,
    scale: float = 1.0,
) -> Array:
    """``[mu cos(phase), mu sin(phase)]`` of ``x [..., L, H, K]``: ``[..., L, H, 2K]``.

    ``mu = softplus(x)`` and ``phase = positions * theta - phase_bias``, in float32.

    Args:
      x: queries or keys ``[..., L, H, K]``.
      positions: integer ``[..., L]``.
      inv_freq: ``[K]`` from :func:`pope_inv_freq`.
      phase_bias: ``[H, K]`` subtracted from the phase (the queries' side of the learned
        offset, already clamped), or None.
      scale: multiplies the result.

    Returns:
      float ``[..., L, H, 2K]`` in ``x.dtype``.

    References:
      Gopalakrishnan et al., arXiv 2509.10534, 2025 (Section 3, the PoPE attention score).
    """
    if inv_freq.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"PoPE needs one frequency per feature: {inv_freq.shape[-1]} frequencies for "
            f"heads of {x.shape[-1]} features."
        )
    magnitude = jax.nn.softplus(x.astype(jnp.float32)) * scale
    cos, sin = rope_cos_sin(positions, inv_freq)  # [..., L, K]
    cos, sin = cos[..., None, :], sin[..., None, :]
    if phase_bias is not None:
        # cos(a - d) = cos a cos d + sin a sin d; sin(a - d) = sin a cos d - cos a sin d.
        phase_bias = jnp.reshape(phase_bias, (1,) * (cos.ndim - 2) + phase_bias.shape)
        bias_cos, bias_sin = jnp.cos(phase_bias), jnp.sin(phase_bias)
        cos, sin = cos * bias_cos + sin * bias_sin, sin * bias_cos - cos * bias_sin
    out = jnp.concatenate([magnitude * cos, magnitude * sin], axis=-1)
    return out.astype(x.dtype)
