"""posenc_jax: positional encodings and attention in JAX/Flax.

A positional encoding is defined by where position enters the computation (``embed``,
``rotate``, ``bias``, ``contextual``), and positions are data: every function takes explicit
integer position arrays. Dimension key, used in names and einsum strings throughout:
B batch, L query length, S key length, H heads, G key/value heads, K head dim, D model dim,
V vocabulary size (see ``posenc_jax.typing``).
"""

from posenc_jax import analysis, attention, encodings, functional, models

__all__ = ["analysis", "attention", "encodings", "functional", "models"]
__version__ = "0.1.0"
