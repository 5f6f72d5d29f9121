"""Pure ``jax.numpy`` math of every encoding: no Flax, usable from any JAX code."""

from posenc_jax.functional.absolute import integer_positions, normalized_positions
from posenc_jax.functional.cope import cope_logits, cope_positions
from posenc_jax.functional.shaw import shaw_key_logits, shaw_relative_index, shaw_value_outputs
from posenc_jax.functional.sinusoidal import sinusoidal, sinusoidal_inv_freq
from posenc_jax.functional.transformer_xl import transformer_xl_logits

__all__ = [
    "cope_logits",
    "cope_positions",
    "integer_positions",
    "normalized_positions",
    "shaw_key_logits",
    "shaw_relative_index",
    "shaw_value_outputs",
    "sinusoidal",
    "sinusoidal_inv_freq",
    "transformer_xl_logits",
]
