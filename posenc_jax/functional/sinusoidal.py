"""Sinusoidal position vectors (Vaswani et al., 2017)."""

import jax.numpy as jnp

from posenc_jax.typing import Array


def sinusoidal_inv_freq(dim: int, *, base: float = 10000.0) -> Array:
    """Frequencies ``omega_t = base^(-2t / dim)`` for t = 0 .. dim/2 - 1, in float32."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"sinusoidal dim must be a positive even number, got {dim}.")
    return base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def sinusoidal(positions: Array, dim: int, *, base: float = 10000.0) -> Array:
    """Sinusoidal encoding of integer positions, interleaved as in the paper.

    ``PE[p, 2t] = sin(p * omega_t)`` and ``PE[p, 2t + 1] = cos(p * omega_t)`` with
    ``omega_t = base^(-2t / dim)``. Angles are computed in float32 whatever the caller's
    dtype, because a bfloat16 position loses integers above 256.

    Args:
      positions: integer array of any shape ``[...]``.
      dim: the encoding width, a positive even number.
      base: the wavelength base (10000 in the paper).

    Returns:
      float32 array ``[..., dim]``.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5.
    """
    inv_freq = sinusoidal_inv_freq(dim, base=base)
    angles = jnp.einsum("...,t->...t", jnp.asarray(positions, jnp.float32), inv_freq)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], dim)
