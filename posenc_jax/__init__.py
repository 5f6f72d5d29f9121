"""posenc_jax: positional encodings and attention in JAX/Flax.

A positional encoding is defined by where position enters the computation (``embed``,
``rotate``, ``bias``, ``contextual``), and positions are data: every function takes explicit
integer position arrays. Dimension key, used in names and einsum strings throughout:
B batch, L query length, S key length, H heads, G key/value heads, K head dim, D model dim,
V vocabulary size (see ``posenc_jax.typing``).

Every module with parameters comes in Flax linen (``posenc_jax.attention``,
``posenc_jax.models``, the encodings themselves) and in Flax NNX (``posenc_jax.nnx``), both
from one definition.
"""

from posenc_jax import analysis, attention, encodings, functional, models, nnx

__all__ = ["analysis", "attention", "encodings", "functional", "models", "nnx"]
__version__ = "0.1.0"
