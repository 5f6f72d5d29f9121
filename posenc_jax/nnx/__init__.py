"""The package's layers as Flax NNX modules, from the same definitions as the linen ones.

Each encoding is defined once (its parameter declarations and pure hooks,
:mod:`posenc_jax.encodings`), and attention and the Transformer compute through functions
shared with their linen modules; the classes here only build parameters, NNX's way: at
construction, from the dimensions they are given, with ``rngs``.

* ``encodings.get(name, **hyperparameters)`` / ``encodings.names()``: the registry's
  definitions; :class:`Encoding` holds one's parameters and runs its hooks.
* :class:`MultiHeadAttention`, :class:`MultiTokenAttention`, :class:`Transformer`: take the
  same configuration objects as the linen modules and hold their parameters under the
  same names.
* :func:`load_linen_params` / :func:`linen_params`: a linen parameter tree into an NNX
  module, and back.
"""

from posenc_jax.nnx import encodings
from posenc_jax.nnx.attention import MultiHeadAttention, MultiTokenAttention
from posenc_jax.nnx.convert import linen_params, load_linen_params
from posenc_jax.nnx.encodings import Encoding
from posenc_jax.nnx.transformer import Transformer

__all__ = [
    "Encoding",
    "MultiHeadAttention",
    "MultiTokenAttention",
    "Transformer",
    "encodings",
    "linen_params",
    "load_linen_params",
]
