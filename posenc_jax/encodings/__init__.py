"""Positional encodings as Flax modules, registered by name.

``names()`` lists them; ``get(name, **hyperparameters)`` builds one. Every encoding is a
:class:`PositionalEncoding` whose hooks (``embed``, ``rotate``, ``bias_fn``, ``contextual``,
``decay``) say where position enters. An encoding is defined once: its parameters
(:class:`Parameter` declarations, shaped by :class:`Dims`) and pure hooks; the class is
the linen module, and ``posenc_jax.nnx.Encoding`` runs the same definition in Flax NNX.
"""

from posenc_jax.encodings import absolute  # noqa: F401  (registers the absolute family)
from posenc_jax.encodings.absolute import Integer, Learned, NoPE, Normalized, Sinusoidal
from posenc_jax.encodings.base import Contextual, PositionalEncoding
from posenc_jax.encodings.bias import FIRE, ALiBi, KerpleLog, KerplePower, Sandwich, T5Bias
from posenc_jax.encodings.contextual import CoPE, Shaw, TransformerXL
from posenc_jax.encodings.decay import Cable, ForgettingTransformer
from posenc_jax.encodings.hf_config import rope_from_hf_config
from posenc_jax.encodings.parameters import Dims, Parameter
from posenc_jax.encodings.randomized import Randomized
from posenc_jax.encodings.registry import get, get_class, hyperparameters, names, register
from posenc_jax.encodings.rotary import (
    DynamicNTKRoPE,
    FoPE,
    LinearRoPE,
    Llama3RoPE,
    LongRoPE,
    NTKRoPE,
    PoPE,
    PRoPE,
    RoPE,
    XPos,
    YaRNRoPE,
)
from posenc_jax.encodings.task_positions import Abacus, PositionCoupling

__all__ = [
    "ALiBi",
    "Abacus",
    "PositionCoupling",
    "FIRE",
    "KerpleLog",
    "KerplePower",
    "Randomized",
    "Sandwich",
    "T5Bias",
    "Cable",
    "ForgettingTransformer",
    "CoPE",
    "Contextual",
    "Dims",
    "Integer",
    "Learned",
    "NoPE",
    "Normalized",
    "Parameter",
    "PositionalEncoding",
    "Shaw",
    "Sinusoidal",
    "TransformerXL",
    "DynamicNTKRoPE",
    "FoPE",
    "LinearRoPE",
    "Llama3RoPE",
    "LongRoPE",
    "NTKRoPE",
    "PoPE",
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
