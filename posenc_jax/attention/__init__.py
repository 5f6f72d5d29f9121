"""Attention: the dot-product core over explicit positions and the multi-head modules.

Layout: ``ops`` (shared operations), the backends ``dense``, ``chunked`` and ``fused``,
``router`` (the one function that picks a backend and explains refusals), ``core``
(``dot_product_attention``, the entry point), ``multi_head`` and ``multi_token`` (the
modules; Multi-Token Attention is multi-head attention plus processors of the maps),
``stick_breaking`` (the stick-breaking weights, an option of multi-head attention in place
of the softmax), ``cache`` (the decoding cache) and ``temperature``.
"""

from posenc_jax.attention.cache import Streaming
from posenc_jax.attention.core import dot_product_attention
from posenc_jax.attention.multi_head import MultiHeadAttention
from posenc_jax.attention.multi_token import MTAConfig, MultiTokenAttention
from posenc_jax.attention.ops import Window, masked_softmax
from posenc_jax.attention.stick_breaking import StickBreaking, stick_breaking_weights
from posenc_jax.attention.temperature import AttentionTemperature

__all__ = [
    "AttentionTemperature",
    "MTAConfig",
    "MultiHeadAttention",
    "MultiTokenAttention",
    "StickBreaking",
    "Streaming",
    "Window",
    "dot_product_attention",
    "masked_softmax",
    "stick_breaking_weights",
]
