"""Attention: the dot-product core over explicit positions and the multi-head module."""

from posenc_jax.attention.core import dot_product_attention, masked_softmax
from posenc_jax.attention.multi_head import MultiHeadAttention
from posenc_jax.attention.multi_token import MTAConfig, MultiTokenAttention

__all__ = [
    "MTAConfig",
    "MultiHeadAttention",
    "MultiTokenAttention",
    "dot_product_attention",
    "masked_softmax",
]
