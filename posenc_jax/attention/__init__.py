"""Attention: the dot-product core over explicit positions and the multi-head module."""

from posenc_jax.attention.core import dot_product_attention, masked_softmax
from posenc_jax.attention.multi_head import MultiHeadAttention
from posenc_jax.attention.multi_token import MTAConfig, MultiTokenAttention
from posenc_jax.attention.temperature import AttentionTemperature

__all__ = [
    "AttentionTemperature",
    "MTAConfig",
    "MultiHeadAttention",
    "MultiTokenAttention",
    "dot_product_attention",
    "masked_softmax",
]
