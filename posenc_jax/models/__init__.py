"""Models built from the package's attention and encodings: a Transformer whose layers
can differ (layer specs, named schedules)."""

from posenc_jax.models import schedules
from posenc_jax.models.layers import LayerSpec
from posenc_jax.models.transformer import Transformer, TransformerConfig

__all__ = ["LayerSpec", "Transformer", "TransformerConfig", "schedules"]
