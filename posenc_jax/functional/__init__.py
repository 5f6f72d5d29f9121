"""Pure ``jax.numpy`` math of every encoding: no Flax, usable from any JAX code."""

from posenc_jax.functional.absolute import integer_positions, normalized_positions
from posenc_jax.functional.sinusoidal import sinusoidal, sinusoidal_inv_freq

__all__ = [
    "integer_positions",
    "normalized_positions",
    "sinusoidal",
    "sinusoidal_inv_freq",
]
