"""Sinusoidal position vectors (Vaswani et al., 2017)."""

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import check_base, is_integer
from posenc_jax.functional.rope import rope_cos_sin
from posenc_jax.typing import Array


def sinusoidal_inv_freq(dim: int, *, base: float = 10000.0) -> np.ndarray:
    """Frequencies ``omega_t = base^(-2t / dim)`` for t = 0 .. dim/2 - 1, in float64 NumPy.

    Kept in float64 so that :func:`sinusoidal` can form exact angles at large positions;
    ``jnp`` arithmetic turns them into float32 wherever they meet a traced array.
    """
    if not is_integer(dim) or dim <= 0 or dim % 2:
        raise ValueError(f"sinusoidal dim must be a positive even number, got {dim!r}.")
    check_base(base, "sinusoid")
    return float(base) ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


def sinusoidal(positions: Array, dim: int, *, base: float = 10000.0) -> Array:
    """Sinusoidal encoding of positions, interleaved as in the paper.

    ``PE[p, 2t] = sin(p * omega_t)`` and ``PE[p, 2t + 1] = cos(p * omega_t)`` with
    ``omega_t = base^(-2t / dim)``. Integer positions get their angles reduced modulo one
    turn in fixed point (:func:`posenc_jax.functional.rope_angles`), exact to ~1e-6 rad at
    any int32 position, where a float32 product ``p * omega`` is off by up to 0.03 rad at
    10^6; their sines and cosines are RoPE's (:func:`posenc_jax.functional.rope_cos_sin`,
    vectorized polynomials, ~3e-7). Fractional positions (interpolation experiments) use
    the float32 product. Never the caller's dtype: a bfloat16 position loses integers
    above 256.

    Args:
      positions: integer (or float) array of any shape ``[...]``.
      dim: the encoding width, a positive even number.
      base: the wavelength base (10000 in the paper).

    Returns:
      float32 array ``[..., dim]``.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5.
    """
    cos, sin = sinusoid_cos_sin(positions, sinusoidal_inv_freq(dim, base=base))
    return jnp.stack([sin, cos], axis=-1).reshape(*cos.shape[:-1], dim)


def sinusoid_cos_sin(positions: Array, inv_freq: np.ndarray) -> tuple[Array, Array]:
    """``(cos(p * omega), sin(p * omega))``, float32 ``[..., F]`` each, for positions
    ``[...]`` and frequencies ``[F]``: integer positions through RoPE's fixed-point angles
    (:func:`posenc_jax.functional.rope_cos_sin`), fractional ones through the float32
    product (see :func:`sinusoidal`)."""
    positions = jnp.asarray(positions)
    if jnp.issubdtype(positions.dtype, jnp.integer):
        return rope_cos_sin(positions, inv_freq)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    return jnp.cos(angles), jnp.sin(angles)
