"""Positional encodings as Flax modules, registered by name.

``names()`` lists them; ``get(name, **hyperparameters)`` builds one. Every encoding is a
:class:`PositionalEncoding` whose hooks (``embed``, ``rotate``, ``bias_fn``) say where
position enters.
"""

from posenc_jax.encodings import absolute  # noqa: F401  (registers the absolute family)
from posenc_jax.encodings.absolute import Integer, Learned, NoPE, Normalized, Sinusoidal
from posenc_jax.encodings.base import Contextual, PositionalEncoding
from posenc_jax.encodings.bias import FIRE, ALiBi, KerpleLog, KerplePower, Sandwich, T5Bias
from posenc_jax.encodings.contextual import CoPE, Shaw, TransformerXL
from posenc_jax.encodings.hf_config import rope_from_hf_config
from posenc_jax.encodings.randomized import Randomized
from posenc_jax.encodings.registry import get, get_class, hyperparameters, names, register
from posenc_jax.encodings.rotary import (
    DynamicNTKRoPE,
    LinearRoPE,
    Llama3RoPE,
    LongRoPE,
    NTKRoPE,
    PRoPE,
    RoPE,
    XPos,
    YaRNRoPE,
)

__all__ = [
    "ALiBi",
    "FIRE",
    "KerpleLog",
    "KerplePower",
    "Randomized",
    "Sandwich",
    "T5Bias",
    "CoPE",
    "Contextual",
    "Integer",
    "Learned",
    "NoPE",
    "Normalized",
    "PositionalEncoding",
    "Shaw",
    "Sinusoidal",
    "TransformerXL",
    "DynamicNTKRoPE",
    "LinearRoPE",
    "Llama3RoPE",
    "LongRoPE",
    "NTKRoPE",
    "PRoPE",
    "RoPE",
    "XPos",
    "YaRNRoPE",
    "get",
    "get_class",
    "hyperparameters",
    "names",
    "register",
    "rope_from_hf_config",
]
