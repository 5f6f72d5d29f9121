"""Attention: the dot-product core over explicit positions and the multi-head module."""

from posenc_jax.attention.core import dot_product_attention, masked_softmax
from posenc_jax.attention.multi_head import MultiHeadAttention

__all__ = ["MultiHeadAttention", "dot_product_attention", "masked_softmax"]
