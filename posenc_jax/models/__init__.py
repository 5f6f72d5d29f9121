"""Models built from the package's attention and encodings."""

from posenc_jax.models.transformer import Transformer, TransformerConfig

__all__ = ["Transformer", "TransformerConfig"]
